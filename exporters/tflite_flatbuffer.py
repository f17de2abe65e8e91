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
