"""int8 TFLite by ai-edge-quantizer (LiteRT's own quantizer) from a float32 ``.tflite`` file, op by op.

Why beside the TF Lite converter's int8 (:mod:`exporters.tflite`): ai-edge-quantizer quantizes the already
converted float file, so every op can be given its own treatment (int8, or kept in float) without re-running
onnx2tf or the converter, and one calibration serves every variant: a search that tries a hundred mixes costs a
hundred quantizations of ~0.1 s, not a hundred conversions. Measured on CamVid val (LR-ASPP MobileNetV3-L, 256 px,
trained by ``edgeseg train``, 100 calibration images): its full int8 keeps 98.85 % agreement / 0.880 mask mIoU
against the converter's 98.29 % / 0.833, with the same file size.

* int8 weights are per channel, activations per tensor, ranges from ``ranges`` (``minmax``: ai-edge-quantizer's
  calibration, a moving average (0.95) of each image's min/max; ``global``: the smallest and largest value over
  all calibration images, the TF Lite converter's rule; ``mse``: the range that minimizes the
  quantization's mean squared error; ``percentile``: the mean over the calibration images of each image's
  0.01th / 99.99th percentile of every activation tensor (NNCF's MEAN_QUANTILE rule), measured by running the
  float file in LiteRT with every tensor kept — outliers no longer stretch the int8 grid).
* The file's output is int8 (ai-edge-quantizer quantizes the graph's OUTPUT too); its input is int8 (``input_type``
  ``int8``), float32 with a QUANTIZE op behind it (``float32``), or uint8 camera bytes with scale 1, zero point 0
  (``uint8``: pixel-input models — MediaPipe and camera code feed uint8 or float32, never int8; the input's range is
  then exactly 0-255 and the QUANTIZE op requantizes uint8 to the int8 grid of the first op). An op kept in float
  gets DEQUANTIZE before it and QUANTIZE after it, inserted by the quantizer.
* :func:`fp16_weights`: float16 weights (``FLOAT_CASTING``), computed in float32: the fp16 file.
* ``DEFAULT_FLOAT_TYPES`` (``HARD_SWISH``) stay float: LiteRT's int8 hard-swish made the int8 file slower than fp32
  (figures below); in float the int8 file runs at 0.74x fp32 latency with the same masks.
* ``HARD_SWISH`` has no int16 kernel in LiteRT (the quantizer refuses a16w8 for it), and measured a16w8 on the
  convolutions did not improve masks (98.87 % / 0.868) while leaving XNNPACK (17x slower here), so the mixes
  this module makes are int8 + float, not int16.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from exporters.native import preload_triton, quiet_native
from exporters.base import ExporterError, batches

RANGES = ("minmax", "global", "mse", "percentile")
INPUT_TYPES = ("int8", "float32", "uint8")
PERCENTILE = 99.99  # ``percentile`` ranges: [100 - P, P] percentiles of each activation tensor, per image
# Op types kept in float by default. HARD_SWISH: LiteRT's int8 HARD_SWISH leaves XNNPACK's fast path — measured
# on LR-ASPP MobileNetV3-L 256 px (AMD EPYC Zen 4, AVX-512 VNNI), full int8 19.7 / 18.1 ms at 1 / 2 threads against
# fp32's 12.9 / 6.9; with its 20 HARD_SWISH ops in float (0 multiply-adds) 7.6 / 5.1 ms, and the masks unchanged
# (CamVid val 98.85 % / 0.878 vs 98.85 % / 0.880). No other op type changed latency by more than 1.5 ms.
DEFAULT_FLOAT_TYPES = ("HARD_SWISH",)
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
_PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE")


@dataclass(frozen=True)
class Op:
    """One op of the float file: its index in the graph, type, ai-edge-quantizer scope and multiply-adds."""

    index: int
    type: str
    scope: str
    macs: int


def unknown_op_types(types: Sequence[str]) -> list[str]:
    """The names in ``types`` that are not TFLite builtin op types (as a .tflite op list spells them)."""
    from ai_edge_litert import schema_py_generated as schema

    return [t for t in types if not hasattr(schema.BuiltinOperator, t)]


def _algorithm(ranges: str):
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if ranges not in RANGES:
        raise ExporterError(f"unknown int8 range method '{ranges}'; use one of {', '.join(RANGES)}")
    return AlgorithmName.MSE if ranges == "mse" else AlgorithmName.MIN_MAX_UNIFORM_QUANT


def _activation_ranges(model: bytes, samples: Sequence[np.ndarray], qsvs: dict, per_image, combine) -> dict:
    """``qsvs`` with every activation tensor's range replaced: ``per_image(values) -> (low, high)`` on each of
    ``samples`` (model inputs), ``combine(lows, highs) -> (low, high)`` over them; the range always holds 0. Measured
    with the LiteRT interpreter on the float file, every intermediate tensor kept."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native():
        interp = Interpreter(model_content=model, experimental_preserve_all_tensors=True)
        interp.allocate_tensors()
    written = {i for d in interp._get_ops_details() for i in d["outputs"]}  # noqa: SLF001 - no public op list
    written |= {d["index"] for d in interp.get_input_details()}
    index = {d["name"]: d["index"] for d in interp.get_tensor_details() if d["index"] in written}
    names = [n for n in qsvs if n in index]  # activations only: constants (weights) keep their own ranges
    inp = interp.get_input_details()[0]["index"]
    lows: dict[str, list[float]] = {n: [] for n in names}
    highs: dict[str, list[float]] = {n: [] for n in names}
    for x in samples:
        interp.set_tensor(inp, np.asarray(x, np.float32))
        interp.invoke()
        for n in names:
            lo, hi = per_image(interp.get_tensor(index[n]).astype(np.float32, copy=False).ravel())
            lows[n].append(float(lo))
            highs[n].append(float(hi))
    out = dict(qsvs)
    for n in names:
        old = qsvs[n]
        lo, hi = combine(lows[n], highs[n])
        out[n] = {**old, "min": np.full_like(np.asarray(old["min"], np.float32), min(lo, 0.0)),
                  "max": np.full_like(np.asarray(old["max"], np.float32), max(hi, 0.0))}
    return out


def percentile_ranges(model: bytes, samples: Sequence[np.ndarray], qsvs: dict, percentile: float = PERCENTILE
                      ) -> dict:
    """``qsvs`` (ai-edge-quantizer's calibration: tensor name -> {"min", "max"}) with every activation tensor's
    range replaced by the mean over ``samples`` of its per-image [100 - p, p] percentiles."""
    q = np.array([100.0 - percentile, percentile]) / 100.0
    return _activation_ranges(model, samples, qsvs, lambda v: np.quantile(v, q),
                              lambda lo, hi: (float(np.mean(lo)), float(np.mean(hi))))


def global_ranges(model: bytes, samples: Sequence[np.ndarray], qsvs: dict) -> dict:
    """``qsvs`` with every activation tensor's range the smallest and largest value it takes over all ``samples``
    (the TF Lite converter's rule; ai-edge-quantizer's ``minmax`` is a moving average of per-image extremes, which
    clips the images whose activations reach furthest)."""
    return _activation_ranges(model, samples, qsvs, lambda v: (v.min(), v.max()), lambda lo, hi: (min(lo), max(hi)))


def graph_ops(model: bytes) -> list[Op]:
    """Every op of a float ``.tflite`` with the scope ai-edge-quantizer matches recipes against (its output
    tensor names, each followed by ``;``) and its multiply-adds (convolutions and fully-connected layers)."""
    ops, tensors = _op_list(model)
    out = []
    for d in ops:
        names = [tensors[i]["name"] for i in d["outputs"] if i >= 0 and tensors[i]["name"]]
        out.append(Op(int(d["index"]), d["op_name"], "".join(f"{n};" for n in names), _macs(d, tensors)))
    return out


def _op_list(model: bytes) -> tuple[list[dict], dict[int, dict]]:
    """A ``.tflite``'s ops (LiteRT's op details) and its tensors by index."""
    preload_triton()
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native():
        interp = Interpreter(model_content=model)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    return interp._get_ops_details(), tensors  # noqa: SLF001 - the only public view of the op list


def _macs(d: dict, tensors: dict) -> int:
    if d["op_name"] not in MAC_OPS or len(d["inputs"]) < 2:
        return 0
    w = [int(v) for v in tensors[d["inputs"][1]]["shape"]]
    y = [int(v) for v in tensors[d["outputs"][0]]["shape"]]
    spatial = int(np.prod(y[1:-1])) if len(y) > 2 else 1
    if d["op_name"] == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, C]: one kh*kw filter per output channel
        return spatial * y[-1] * w[1] * w[2]
    if d["op_name"] == "TRANSPOSE_CONV":  # inputs (output shape, weights [Cout, kh, kw, Cin], input): per input pixel
        x = [int(v) for v in tensors[d["inputs"][2]]["shape"]]
        return int(np.prod(x[1:-1])) * int(np.prod(w))
    return spatial * int(np.prod(w))  # CONV_2D [Cout, kh, kw, Cin] / FULLY_CONNECTED [Cout, Cin]


def float_macs_share(model: bytes) -> float:
    """The share (0-1) of a ``.tflite`` file's multiply-adds computed in float: its convolutions and fully-connected
    layers whose input tensor is float32 (an int8 file's record of what it really left in float)."""
    ops, tensors = _op_list(model)
    total = floating = 0
    for d in ops:
        macs = _macs(d, tensors)
        total += macs
        x = d["inputs"][2] if d["op_name"] == "TRANSPOSE_CONV" else d["inputs"][0]
        floating += macs if macs and np.dtype(tensors[x]["dtype"]) == np.float32 else 0
    return floating / total if total else 0.0


class Int8Quantizer:
    """Calibrates a float ``.tflite`` once, then writes int8 files with any set of ops kept in float."""

    def __init__(self, model: bytes, calibration: Sequence[np.ndarray], ranges: str = "minmax",
                 float_types: Sequence[str] = DEFAULT_FLOAT_TYPES, layout: str = "nhwc",
                 int8_types: Sequence[str] | None = None, input_type: str = "int8") -> None:
        """``calibration``: NCHW float32 batches; ``layout``: the file's input layout (``nhwc``: onnx2tf's files,
        the batches are transposed; ``nchw``: litert-torch's, fed as they are). ``int8_types``: the
        ai-edge-quantizer op names to quantize (e.g. ``CONV_2D``; None: every op it supports). ``input_type``: the
        file's input tensor (module docstring); ``uint8`` takes calibration images of pixel values 0-255."""
        preload_triton()
        from ai_edge_litert.interpreter import Interpreter

        if layout not in ("nhwc", "nchw"):
            raise ExporterError(f"unknown input layout '{layout}' (nhwc or nchw)")
        if input_type not in INPUT_TYPES:
            raise ExporterError(f"unknown input type '{input_type}' ({', '.join(INPUT_TYPES)})")
        self.model, self.ranges, self.algorithm = bytes(model), ranges, _algorithm(ranges)
        self.input_type = input_type
        self.int8_types = None if int8_types is None else tuple(int8_types)
        if self.int8_types is not None:
            from ai_edge_quantizer.qtyping import TFLOperationName

            bad = [t for t in self.int8_types if not hasattr(TFLOperationName, t)]
            if bad:
                raise ExporterError(f"ai-edge-quantizer has no op name(s) {', '.join(bad)} (e.g. CONV_2D, "
                                    f"FULLY_CONNECTED)")
        order = (0, 2, 3, 1) if layout == "nhwc" else (0, 1, 2, 3)
        samples = [np.ascontiguousarray(np.asarray(b, np.float32)[i : i + 1].transpose(order))
                   for b in batches(calibration) for i in range(len(b))]
        if not samples:
            raise ExporterError("int8 TFLite needs calibration images; none were given")
        with quiet_native():
            interp = Interpreter(model_content=self.model)
        sigs = interp.get_signature_list()
        if len(sigs) != 1:
            raise ExporterError(f"ai-edge-quantizer route: expected one signature, the file has {len(sigs)}")
        (self.signature, sig), = sigs.items()
        if len(sig["inputs"]) != 1:
            raise ExporterError(f"ai-edge-quantizer route: expected one image input, the file has {sig['inputs']}")
        want = tuple(int(v) for v in interp.get_input_details()[0]["shape"])
        if tuple(samples[0].shape) != want:
            raise ExporterError(f"calibration images are {tuple(samples[0].shape)} ({layout.upper()}), the model "
                                f"takes {want}")
        self.ops = graph_ops(self.model)
        self.float_types = tuple(float_types)
        unknown = unknown_op_types(self.float_types)
        if unknown:
            raise ExporterError(f"unknown TFLite op type(s) {', '.join(unknown)} (names as in the file's op list, "
                                f"e.g. HARD_SWISH, CONV_2D)")
        #: ops every file keeps in float (of ``float_types``)
        self.always_float = tuple(o.index for o in self.ops if o.type in self.float_types)
        self.calibration_images = len(samples)
        qt = self._quantizer(())
        # percentile and global replace every activation range by their own pass over all the images: the
        # quantizer's calibration then only has to name the tensors it quantizes, which one image does
        feed = samples[:1] if ranges in ("percentile", "global") else samples
        with quiet_native() as log:
            try:
                self._qsv = qt.calibrate({self.signature: [{sig["inputs"][0]: s} for s in feed]}, num_threads=1)
            except Exception as e:  # noqa: BLE001 - the quantizer raises ValueError, RuntimeError...
                raise ExporterError(f"ai-edge-quantizer calibration failed: {type(e).__name__}: {str(e)[:400]}\n"
                                    f"{log.getvalue()[-1000:]}") from None
        if ranges == "percentile":
            self._qsv = percentile_ranges(self.model, samples, self._qsv)
        elif ranges == "global":
            self._qsv = global_ranges(self.model, samples, self._qsv)
        if input_type == "uint8":  # camera bytes: the input's grid is exactly 0-255, whatever the images held
            name = interp.get_input_details()[0]["name"]
            old = self._qsv[name]
            self._qsv[name] = {**old, "min": np.zeros_like(np.asarray(old["min"], np.float32)),
                               "max": np.full_like(np.asarray(old["max"], np.float32), 255.0)}

    def _quantizer(self, float_ops: Sequence[int]):
        from ai_edge_quantizer import quantizer
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import TFLOperationName

        qt = quantizer.Quantizer(self.model)
        for name in self.int8_types or ("ALL_SUPPORTED",):
            qt.add_static_config(regex=".*", operation_name=getattr(TFLOperationName, name), activation_num_bits=8,
                                 weight_num_bits=8, algorithm_key=self.algorithm)
        if self.input_type != "int8":  # the graph input stays float32; the quantizer puts a QUANTIZE op behind it
            qt._recipe_manager.add_quantization_config(  # noqa: SLF001 - as below
                regex=".*", operation_name=TFLOperationName.INPUT, algorithm_key=AlgorithmName.NO_QUANTIZE)
        by_index = {o.index: o for o in self.ops}
        for i in dict.fromkeys((*self.always_float, *float_ops)):
            if i not in by_index:
                raise ExporterError(f"op {i} is not in the model (it has {len(self.ops)} ops)")
            # a later recipe entry wins over an earlier one for the scopes it matches: this op stays float
            qt._recipe_manager.add_quantization_config(  # noqa: SLF001 - Quantizer has no public no-quantize entry
                regex="^" + re.escape(by_index[i].scope) + "$", operation_name=TFLOperationName.ALL_SUPPORTED,
                algorithm_key=AlgorithmName.NO_QUANTIZE)
        return qt

    def quantize(self, float_ops: Sequence[int] = ()) -> bytes:
        """The int8 file with the ops at ``float_ops`` (indices into :attr:`ops`) and :attr:`always_float` left in
        float."""
        qt = self._quantizer(tuple(float_ops))
        with quiet_native() as log:
            try:
                data = bytes(qt.quantize(self._qsv, enable_progress_report=False).quantized_model)
            except Exception as e:  # noqa: BLE001
                raise ExporterError(f"ai-edge-quantizer failed: {type(e).__name__}: {str(e)[:400]}\n"
                                    f"{log.getvalue()[-1000:]}") from None
        return uint8_input(data) if self.input_type == "uint8" else data

    def float_macs(self, float_ops: Sequence[int]) -> float:
        """The share (0-1) of the model's multiply-adds that ``float_ops`` compute in float."""
        total = sum(o.macs for o in self.ops)
        keep = set(float_ops)
        return sum(o.macs for o in self.ops if o.index in keep) / total if total else 0.0

    def candidates(self) -> list[Op]:
        """Ops a search may keep in float: every op that computes (not the QUANTIZE/DEQUANTIZE pass-throughs) and
        is not float already."""
        return [o for o in self.ops if o.type not in _PASS_THROUGH and o.index not in self.always_float]


def fp16_weights(model: bytes) -> bytes:
    """The float ``.tflite`` with float16 weights (ai-edge-quantizer's ``FLOAT_CASTING``, weight-only): half the
    size; a DEQUANTIZE op per weight, so CPUs compute in float32 (XNNPACK folds them)."""
    preload_triton()
    from ai_edge_quantizer import quantizer, qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    qt = quantizer.Quantizer(bytes(model))
    config = qtyping.OpQuantizationConfig(
        weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
        compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True)
    qt._recipe_manager.add_quantization_config(  # noqa: SLF001 - add_weight_only_config takes no float dtype
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        algorithm_key=AlgorithmName.FLOAT_CASTING, op_config=config)
    with quiet_native() as log:
        try:
            return bytes(qt.quantize().quantized_model)
        except Exception as e:  # noqa: BLE001
            raise ExporterError(f"ai-edge-quantizer fp16 failed: {type(e).__name__}: {str(e)[:400]}\n"
                                f"{log.getvalue()[-1000:]}") from None


def uint8_input(data: bytes) -> bytes:
    """``data`` (a float32 input followed by QUANTIZE ops) with a uint8 input of scale 1, zero point 0: the
    QUANTIZE op then requantizes the camera bytes to the int8 grid behind it (a TFLite builtin case). A file whose
    input also feeds an op kept in float (a mixed-precision search kept the first op float) is returned as it is:
    its input stays float32 (MediaPipe and camera code feed float32 pixels too)."""
    from exporters.tflite_flatbuffer import pack, unpack

    from ai_edge_litert import schema_py_generated as schema

    model = unpack(data)
    sub = model.subgraphs[0]
    index = sub.inputs[0]
    tensor = sub.tensors[index]
    users = [op for op in sub.operators if index in list(op.inputs)]
    names = [model.operatorCodes[op.opcodeIndex] for op in users]
    quantize = [max(c.builtinCode, c.deprecatedBuiltinCode) == schema.BuiltinOperator.QUANTIZE for c in names]
    if tensor.type != schema.TensorType.FLOAT32 or not users:
        raise ExporterError("uint8 input: expected a float32 input read by the graph's first ops")
    if not all(quantize):
        return data
    q = schema.QuantizationParametersT()
    q.scale, q.zeroPoint = [1.0], [0]
    tensor.type, tensor.quantization = schema.TensorType.UINT8, q
    return pack(model)
