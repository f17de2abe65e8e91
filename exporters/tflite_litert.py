"""TFLite for multi-output graphs (Mask R-CNN's export graph): PyTorch -> litert-torch -> ``.tflite``; fp16 and
int8 with ai-edge-quantizer; run with the LiteRT interpreter's signature runner.

Why a second route to the same target: onnx2tf re-lays every tensor out for NHWC and mis-shapes the [N, 4] box
and [N, N] overlap tensors of a detection post-process (measured: it fails inside its own op merging on the IoU
subtraction), while litert-torch lowers ``torch.export``'s graph op for op and keeps NCHW, so TopK, Gather and
the reductions arrive as TFLite builtins (TOPK_V2, GATHER_ND, REDUCE_MAX, SELECT...). Segmentation models keep the
onnx2tf route (:mod:`exporters.tflite`), which gives NHWC inputs that camera code and MediaPipe expect.

* fp16: float16 weights of every convolution and fully-connected layer (ai-edge-quantizer's float-casting
  weight-only recipe), computed in float32.
* int8: int8 weights and activations for the convolutions and fully-connected layers (static, calibrated on the
  caller's images), everything else — proposal decoding, NMS, RoIAlign gathers, softmax — left in float: box
  coordinates and the NMS overlap tests need float resolution. ``details["int8_ops"]`` counts what is int8.
* int8-weights: int8 weights (per channel) of the same layers, dequantized and computed in float (ai-edge-
  quantizer's weight-only recipe): a quarter of the size, float activations.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from exporters.atomic import atomic_path
from exporters.native import preload_triton, quiet_native
from exporters.base import ExporterError, path_size

INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_2D_TRANSPOSE")
PRECISIONS = ("fp32", "fp16", "int8", "int8-weights")


def _float_bytes(module, example: np.ndarray) -> bytes:
    import torch

    preload_triton()
    import litert_torch

    x = torch.from_numpy(np.asarray(example, np.float32))
    with quiet_native() as log:
        try:
            edge = litert_torch.convert(module.eval().cpu(), (x,))
            return bytes(edge.model_content())
        except Exception as e:  # noqa: BLE001 - torch.export / lowering raise many types
            raise ExporterError(f"litert-torch could not convert the graph: {type(e).__name__}: {str(e)[:600]}\n"
                                f"{log.getvalue()[-1500:]}") from None


def _signature(model: bytes) -> tuple[str, str, list[str]]:
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native():
        interp = Interpreter(model_content=model)
    (key, sig), = interp.get_signature_list().items()
    return key, sig["inputs"][0], sorted(sig["outputs"], key=_output_index)


def _output_index(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _quantize(model: bytes, precision: str, calibration: Sequence[np.ndarray], scope: str = ".*") -> tuple[bytes, dict]:
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    qt = quantizer.Quantizer(model)
    if precision == "fp16":
        for op in INT8_OPS:
            qt.add_weight_only_config(regex=".*", operation_name=getattr(TFLOperationName, op), num_bits=16,
                                      algorithm_key=AlgorithmName.FLOAT_CASTING)
        calib, n = None, 0
    elif precision == "int8-weights":
        for op in INT8_OPS:
            qt.add_weight_only_config(regex=scope, operation_name=getattr(TFLOperationName, op), num_bits=8)
        calib, n = None, 0
    else:
        samples = [np.asarray(c, np.float32)[i : i + 1] for c in calibration for i in range(len(c))]
        if not samples:
            raise ExporterError("int8 TFLite needs calibration images; none were given")
        for op in INT8_OPS:
            qt.add_static_config(regex=scope, operation_name=getattr(TFLOperationName, op), activation_num_bits=8,
                                 weight_num_bits=8)
        key, inp, _ = _signature(model)
        calib, n = qt.calibrate({key: [{inp: s} for s in samples]}, num_threads=1), len(samples)
    with quiet_native() as log:
        try:
            res = qt.quantize(calib, enable_progress_report=False)
        except Exception as e:  # noqa: BLE001
            raise ExporterError(f"ai-edge-quantizer failed ({precision}): {type(e).__name__}: {str(e)[:400]}\n"
                                f"{log.getvalue()[-1000:]}") from None
    return bytes(res.quantized_model), {"calibration_images": n}


def op_types(path_or_bytes) -> dict[str, dict[str, int]]:
    """Per op name, how many instances compute on int8 and on float inputs: proof of what the file quantized."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native():
        interp = (Interpreter(model_content=path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray))
                  else Interpreter(model_path=str(path_or_bytes)))
    tensors = {d["index"]: np.dtype(d["dtype"]).name for d in interp.get_tensor_details()}
    out: dict[str, dict[str, int]] = {}
    for op in interp._get_ops_details():
        ins = [i for i in op["inputs"] if i >= 0]
        kind = tensors.get(ins[0], "?") if ins else "none"
        out.setdefault(op["op_name"], {})
        out[op["op_name"]][kind] = out[op["op_name"]].get(kind, 0) + 1
    return dict(sorted(out.items()))


def ops_by_precision(path_or_bytes) -> tuple[dict[str, int], dict[str, int]]:
    """From :func:`op_types`: per op name, how many compute in int8, and how many in float32 (QUANTIZE/DEQUANTIZE,
    the conversions themselves, left out of the float count)."""
    ops = op_types(path_or_bytes)
    return ({k: v["int8"] for k, v in ops.items() if v.get("int8")},
            {k: v["float32"] for k, v in ops.items() if v.get("float32") and k not in ("QUANTIZE", "DEQUANTIZE")})


def export_graph(module, example: np.ndarray, precision: str, path: Path,
                 calibration: Sequence[np.ndarray] = (), int8_scope: str = ".*") -> dict:
    """Write ``module`` (a torch module with tensor outputs) as a ``.tflite`` at ``precision``; returns details.
    ``int8_scope``: a regular expression over op names (litert-torch names them by module path, e.g.
    ``..._backbone/...``) selecting the layers int8 quantizes; the others stay float."""
    if precision not in PRECISIONS:
        raise ExporterError(f"target 'tflite' has no precision '{precision}' for this graph ({', '.join(PRECISIONS)})")
    t0 = time.time()
    data = _float_bytes(module, example)
    details: dict = {"converter": "litert-torch" + ("" if precision == "fp32" else " + ai-edge-quantizer"),
                     "convert_seconds": round(time.time() - t0, 2)}
    if precision != "fp32":
        data, extra = _quantize(data, precision, calibration, int8_scope)
        if precision.startswith("int8"):
            extra["int8_scope"] = int8_scope
        details.update(extra)
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(data)
    details["int8_ops"] = ops_by_precision(Path(path))[0]
    details["size_bytes"] = path_size(Path(path))
    return details


def int8_quantizer(module, example: np.ndarray | None, calibration: Sequence[np.ndarray], ranges: str = "minmax"):
    """The float file of ``module`` calibrated once (:class:`exporters.tflite_aeq.Int8Quantizer`, NCHW input,
    int8 for the convolutions and fully-connected layers only, as ``int8``): files with any of those ops kept in
    float then cost one quantization each, for a mixed-precision search. ``module`` may also be the bytes of a
    float file this route wrote (``example`` unused): the conversion, tens of seconds for Mask R-CNN, is skipped."""
    from exporters.tflite_aeq import Int8Quantizer

    t0 = time.time()
    float_file = bytes(module) if isinstance(module, (bytes, bytearray)) else _float_bytes(module, example)
    q = Int8Quantizer(float_file, calibration, ranges, float_types=(), layout="nchw", int8_types=INT8_OPS)
    q.seconds = round(time.time() - t0, 2)
    return q


def write_quantized(q, float_ops: Sequence[int], path: Path) -> dict:
    """Write the file of :func:`int8_quantizer` ``q`` with ``float_ops`` (op indices) kept in float."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(q.quantize(float_ops))
    return {"converter": "litert-torch + ai-edge-quantizer", "calibration_images": q.calibration_images,
            "int8_ops": ops_by_precision(Path(path))[0], "size_bytes": path_size(Path(path))}


class GraphRunner:
    """A multi-output ``.tflite`` (a path, or the file's bytes) through LiteRT's signature runner: NCHW float32 in,
    outputs in graph order."""

    def __init__(self, path: Path | bytes, output_names: Sequence[str], threads: int = 2) -> None:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        where = "the quantized model" if isinstance(path, (bytes, bytearray)) else f"'{path}'"
        self._content = bytes(path) if isinstance(path, (bytes, bytearray)) else None  # the interpreter reads it
        try:
            with quiet_native():
                self.interp = (Interpreter(model_content=self._content, num_threads=threads)
                               if isinstance(path, (bytes, bytearray)) else
                               Interpreter(model_path=str(path), num_threads=threads))
                self.sig = self.interp.get_signature_runner()
        except (ValueError, RuntimeError) as e:
            raise ExporterError(f"LiteRT cannot load {where}: {str(e)[:300]}") from None
        (key, sig), = self.interp.get_signature_list().items()
        self.input = sig["inputs"][0]
        self.outputs = sorted(sig["outputs"], key=_output_index)
        if len(self.outputs) != len(output_names):
            raise ExporterError(f"{where} has {len(self.outputs)} outputs, expected {len(output_names)} "
                                f"({', '.join(output_names)})")
        self.names = tuple(output_names)
        self.runtime = f"LiteRT {getattr(ai_edge_litert, '__version__', '')} interpreter, {threads} threads"

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = self.sig(**{self.input: np.ascontiguousarray(np.asarray(x, np.float32))})
        return {name: np.asarray(out[key]) for name, key in zip(self.names, self.outputs)}

    def tensors(self) -> dict:
        """The signature an app calls: ``{"input": {key, shape, dtype}, "outputs": {name: {key, shape, dtype}}}``."""
        ins, outs = self.sig.get_input_details(), self.sig.get_output_details()

        def spec(key: str, d: dict) -> dict:
            return {"key": key, "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name}

        return {"input": spec(self.input, ins[self.input]),
                "outputs": {name: spec(key, outs[key]) for name, key in zip(self.names, self.outputs)}}
