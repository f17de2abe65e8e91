"""A ``.tflite`` flatbuffer as objects and back, with LiteRT's generated schema classes (``schema.fbs``).

For the few edits edgeseg makes to a converted file (an input's type), never to write a graph: converters and
quantizers make the graph. Buffers that a writer stored past the flatbuffer (``offset``/``size``, as
ai-edge-quantizer does for large files) are taken inline, because re-packing moves everything behind it.
"""

from __future__ import annotations

import numpy as np

from exporters.base import ExporterError


def unpack(data: bytes):
    """The file's ``ModelT`` (object API of ``ai_edge_litert.schema_py_generated``), buffers inline."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    except Exception as e:  # noqa: BLE001 - a damaged flatbuffer raises anything from struct to IndexError
        raise ExporterError(f"not a readable .tflite flatbuffer: {type(e).__name__}: {e}") from None
    for buf in model.buffers or []:
        if getattr(buf, "offset", 0) > 1 and getattr(buf, "size", 0) > 0:
            buf.data = np.frombuffer(data[buf.offset : buf.offset + buf.size], np.uint8)
            buf.offset, buf.size = 0, 0
    return model


def pack(model) -> bytes:
    """``model`` (a ``ModelT``) as ``.tflite`` bytes (file identifier ``TFL3``)."""
    import flatbuffers

    b = flatbuffers.Builder(1 << 20)
    b.Finish(model.Pack(b), b"TFL3")
    return bytes(b.Output())


def invoked_shapes(data: bytes) -> dict[int, list[int]]:
    """Every tensor's shape (by index in the main subgraph) after LiteRT ran the file once on a zero input."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()
    return {d["index"]: [int(v) for v in d["shape"]] for d in interp.get_tensor_details()}


def settle_shapes(data: bytes) -> tuple[bytes, list[str]]:
    """The file with every static tensor shape equal to what LiteRT computes when it runs it, and the names of the
    tensors that were wrong. A converter's shape inference can leave a shape that the interpreter resizes at run
    time (onnx2tf 2.6 stores LR-ASPP's final Resize output and ``logits`` as [1, 1, 1, C]): LiteRT's own interpreter
    copes, but clients that allocate from the stored shapes (MediaPipe's InferenceCalculator: "TfLiteTensor and
    Tensor shape do not match"; app code reading ``getOutputTensor(0).shape()``) do not. Dimensions the file marks
    dynamic (-1 in the shape signature) are left alone."""
    shapes = invoked_shapes(data)
    model = unpack(data)
    fixed = []
    for i, t in enumerate(model.subgraphs[0].tensors or []):
        sig = t.shapeSignature
        if i not in shapes or (sig is not None and any(int(v) < 0 for v in sig)):
            continue
        if t.shape is None or [int(v) for v in t.shape] != shapes[i]:
            t.shape = np.array(shapes[i], np.int32)
            if sig is not None:
                t.shapeSignature = np.array(shapes[i], np.int32)
            fixed.append(t.name.decode() if isinstance(t.name, bytes) else str(t.name))
    return (pack(model) if fixed else data), fixed
