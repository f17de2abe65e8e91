"""TFLite target: PyTorch -> ONNX -> fp32 .tflite (onnx2tf 2.x, no TensorFlow) -> ai-edge-quantizer; run with LiteRT.

* onnx2tf (2.x, its ``flatbuffer_direct`` backend) turns the NCHW ONNX graph into an NHWC float32 ``.tflite``
  (input ``[1, H, W, 3]``) in seconds and imports no TensorFlow. That float file is cached in ``options.work_dir``
  (per input and output kind) and every precision is made from it by ai-edge-quantizer (:mod:`exporters.tflite_aeq`).
* fp32: the float file. fp16: its weights as float16 (``FLOAT_CASTING``), computed in float32 by XNNPACK on CPUs.
  int8: full-integer, from activation ranges calibrated on the representative images the caller passes (each
  tensor's global min/max over them, the TF Lite converter's rule; per-channel int8 weights), ``HARD_SWISH``
  kept float (LiteRT's int8 hard-swish leaves XNNPACK's fast path: :data:`exporters.tflite_aeq.DEFAULT_FLOAT_TYPES`);
  int8 input (uint8 for pixel input) and int8 output.
* Every float file is run against the PyTorch model on a seeded input before use; one that differs (onnx2tf 2.6
  mis-lays out some graphs) is converted again by litert-torch, and the record's ``converter`` says why.
* ``output="argmax"``: the model's logits followed by an argmax over classes cast to uint8 in the graph
  (``ARG_MAX`` + ``CAST``), so an app reads the [1, H, W] class map directly.
* ``input="pixels"``: the normalization moves into the graph, so the model takes RGB pixel values 0-255 as a
  camera frame holds them (float32; uint8 for int8 models, whose input quantization is then exactly scale 1,
  zero point 0). This is what MediaPipe Tasks and most Android code expect. ``input="image"`` (the default)
  takes the normalized float tensor (int8 models: int8 input with the stored scale/zero point).
* Every file carries TFLite metadata (:mod:`exporters.tflite_metadata`): normalization, labels, and an
  ``edgeseg`` entry the runner reads to feed the model correctly.

The Runner takes NCHW float32 (normalized) input and returns NCHW float32 logits; it transposes to
and from NHWC and (de)quantizes int8 tensors with the scale/zero-point stored in the model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from exporters import tflite_flatbuffer, tflite_metadata
from exporters.atomic import atomic_path
from exporters.native import preload_triton, quiet_native
from exporters.base import (ExporterError, ExportOptions, ExportResult, Target, batches, check_precision, class_map,
                            path_size)
from exporters.tflite_litert import PRECISIONS as GRAPH_PRECISIONS

CONVERTER = "onnx2tf (flatbuffer_direct)"


@contextlib.contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _pixel_input(model, mean, std):
    """``model`` behind ``(x / 255 - mean) / std`` on NCHW RGB pixels 0-255 (one multiply-add in the graph)."""
    import torch

    class PixelInput(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)))
            self.register_buffer("shift", -(torch.tensor(mean) / torch.tensor(std)).float().view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x * self.scale + self.shift)

    return PixelInput(model).eval()


def to_pixels(x: np.ndarray, mean, std) -> np.ndarray:
    """Normalized NCHW floats back to the 8-bit pixel values (as float32) a camera frame holds."""
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return np.clip(np.round((np.asarray(x, np.float32) * s + m) * 255.0), 0, 255).astype(np.float32)


def _nhwc_output(model):
    """``model`` with its NCHW logits transposed to NHWC in the graph: the ONNX file's output is then already the
    file's [N, H, W, C], which onnx2tf keeps as it is (left to it, an output made by a Slice stays NCHW)."""
    import torch

    class NHWCOutput(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.inner(x)
            y = y["out"] if isinstance(y, dict) else y
            return y.permute(0, 2, 3, 1)

    return NHWCOutput(model).eval()


def float_file(model, example: np.ndarray, options: ExportOptions) -> tuple[Path, float]:
    """The NHWC float32 ``.tflite`` of ``model`` for ``options.input`` / ``options.output`` (onnx2tf 2.x, no
    TensorFlow), converted once and cached in ``options.work_dir``; returns (path, seconds spent converting)."""
    from exporters.onnx import constants_as_initializers, fold_constants, write_onnx

    work = Path(options.work_dir) if options.work_dir else Path(tempfile.mkdtemp(prefix="edgeseg-tflite-"))
    # absolute: onnx2tf runs in a scratch working directory
    # "settled": stored shapes made equal to the run's (a cache of an earlier edgeseg, without that, is not reused)
    path = work.resolve() / f"float32-{options.input}-{options.output}-settled.tflite"
    if options.input == "pixels":
        model = _pixel_input(model, options.normalization.mean, options.normalization.std)
        example = np.full_like(example, 128.0)
    model = class_map(model, "uint8") if options.output == "argmax" else model
    if path.exists():
        return path, 0.0
    t0 = time.time()
    preload_triton()
    try:
        import onnx2tf
    except ImportError as e:
        raise ExporterError(f"TFLite export needs onnx2tf 2.x ({e}); run `make install` (it installs onnx2tf "
                            f"without its exact pins, docs/stack.md)") from None
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(prefix="edgeseg-onnx2tf-") as scratch:
        scratch = Path(scratch)
        onnx_path = scratch / "model.onnx"
        write_onnx(model if options.output == "argmax" else _nhwc_output(model), example, onnx_path)
        constants_as_initializers(onnx_path)
        fold_constants(onnx_path)
        with _in_dir(scratch), quiet_native() as log:
            try:
                onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(scratch / "out"),
                                tflite_backend="flatbuffer_direct", copy_onnx_input_output_names_to_tflite=True,
                                output_signaturedefs=True, non_verbose=True, verbosity="error")
            except BaseException as e:  # onnx2tf calls sys.exit on some failures
                raise ExporterError(f"onnx2tf could not convert the model: {e!r}\n{log.getvalue()[-2000:]}") from e
        produced = scratch / "out" / "model_float32.tflite"
        pixels = options.input == "pixels"
        problem = _differs(produced, model, example.shape, pixels) if produced.exists() else \
            f"onnx2tf wrote no float32 .tflite:\n{log.getvalue()[-2000:]}"
        if problem:  # onnx2tf mis-lays out some graphs: litert-torch converts them from PyTorch, exactly and slower
            try:
                _litert_torch_file(model, example, tmp)
            except ExporterError as e:
                raise ExporterError(f"onnx2tf's file {problem}; {e}") from None
            again = _differs(tmp, model, example.shape, pixels)
            if again:
                raise ExporterError(f"TFLite conversion failed: onnx2tf's file {problem}; litert-torch's {again}")
            (work / f"{path.name}.why").write_text(f"litert-torch, because onnx2tf's file {problem}\n")
        else:
            shutil.move(produced, tmp)
            (work / f"{path.name}.why").unlink(missing_ok=True)
        # stored shapes equal to the run's (MediaPipe allocates from them); quantized files inherit them
        data, _ = tflite_flatbuffer.settle_shapes(tmp.read_bytes())
        tmp.write_bytes(data)
    return path, time.time() - t0


def float_route(path: Path) -> str:
    """Which converter wrote the cached float file at ``path`` (:func:`float_file`), and why when not onnx2tf."""
    why = path.with_name(f"{path.name}.why")
    return why.read_text().strip() if why.exists() else CONVERTER


def _differs(path: Path, model, shape: tuple[int, ...], pixels: bool) -> str:
    """Why the float file at ``path`` does not compute what ``model`` computes on a seeded NCHW input of ``shape``
    (random normal; pixel values 0-255 for a pixel-input model), or "" when it does (logits within 1e-3 of their
    scale; a class map on 99.5 % of pixels)."""
    import torch

    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, shape).astype(np.float32) if pixels else
         rng.standard_normal(shape).astype(np.float32))
    try:
        with quiet_native():
            y = TFLiteRunner(path, threads=1, kernels="builtin")(x)
    except (ExporterError, ValueError, RuntimeError) as e:
        return f"does not run ({str(e)[:200]})"
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
        ref = (ref["out"] if isinstance(ref, dict) else ref).numpy()
    if y.shape != ref.shape:
        return f"gives shape {list(y.shape)} where the model gives {list(ref.shape)}"
    if ref.dtype == np.uint8:
        same = float((y == ref).mean())
        return "" if same >= 0.995 else f"agrees with the model on {100 * same:.2f} % of pixels"
    diff, scale = float(np.abs(y - ref).max()), max(1.0, float(np.abs(ref).max()))
    return "" if diff <= 1e-3 * scale else f"differs from the model by up to {diff:.3g} (scale {scale:.3g})"


def _litert_torch_file(model, example: np.ndarray, out: Path) -> None:
    """The NHWC float32 file of ``model`` by litert-torch (PyTorch -> TFLite, no ONNX, no TensorFlow)."""
    import torch

    from exporters.tflite_pt2e import nhwc

    preload_triton()
    try:
        import litert_torch
    except ImportError as e:
        raise ExporterError(f"litert-torch is needed for this model's TFLite file ({e}); pip install "
                            f"'edgeseg[tflite]'") from None

    n, c, h, w = example.shape
    with quiet_native() as log:
        try:
            edge = litert_torch.convert(nhwc(model).eval(), (torch.zeros(n, h, w, c),))
            data = bytes(edge.model_content())
        except Exception as e:  # noqa: BLE001 - torch.export and the lowering raise many types
            raise ExporterError(f"litert-torch could not convert the model: {type(e).__name__}: {str(e)[:400]}\n"
                                f"{log.getvalue()[-1500:]}") from None
    out.write_bytes(data)


def _convert(path: Path, options: ExportOptions) -> tuple[bytes, int]:
    """The file at ``options.precision`` from the float file at ``path``, and the number of calibration images
    the int8 ranges came from (else 0)."""
    from exporters.tflite_aeq import DEFAULT_FLOAT_TYPES, Int8Quantizer, fp16_weights

    data = path.read_bytes()
    if options.precision == "fp32":
        return data, 0
    if options.precision == "fp16":
        return fp16_weights(data), 0
    samples = batches(options.calibration)
    if not samples:
        raise ExporterError("int8 TFLite needs calibration images; none were given")
    pixels = options.input == "pixels"
    if pixels:
        samples = [to_pixels(s, options.normalization.mean, options.normalization.std) for s in samples]
    q = Int8Quantizer(data, samples, "global", DEFAULT_FLOAT_TYPES, input_type="uint8" if pixels else "int8")
    return q.quantize(), q.calibration_images


def op_signature(path: Path) -> tuple[tuple[str, str], ...]:
    """Every op of a TFLite file as (type, dtype of its first input), in graph order: two files with the same
    signature run the same kernels (weights and scales differ, work does not), so they take the same time."""
    with quiet_native():
        interp = interpreter(path, 1, "builtin")
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    out = []
    for op in interp._get_ops_details():  # noqa: SLF001 - the only public view of the op list
        ins = [i for i in op["inputs"] if i >= 0]
        out.append((op["op_name"], np.dtype(tensors[ins[0]]["dtype"]).name if ins else ""))
    return tuple(out)


def float_ops(path: Path) -> list[str]:
    """Ops of a TFLite file that compute in float32 (their first input is float32), from its op list."""
    return [name for name, dtype in op_signature(path)
            if dtype == "float32" and name not in ("QUANTIZE", "DEQUANTIZE")]


def model_info(options: ExportOptions) -> tflite_metadata.ModelInfo:
    """The metadata of an export: normalization in the input tensor's units, labels, edgeseg's own entry."""
    norm = options.normalization
    meta = options.metadata
    if options.input == "pixels":
        mean, std = (0.0,), (1.0,)
    else:
        mean, std = tuple(m * 255.0 for m in norm.mean), tuple(s * 255.0 for s in norm.std)
    return tflite_metadata.ModelInfo(
        name=meta.get("name", "edgeseg segmentation model"), labels=tuple(options.class_names),
        mean=mean, std=std, description=meta.get("description", ""), version=meta.get("version", ""),
        author=meta.get("author", ""), license=meta.get("license", ""), output=options.output,
        edgeseg={"input": options.input, "normalization": {"mean": list(norm.mean), "std": list(norm.std)},
                 "classes": json.loads(meta.get("edgeseg_classes", "[]")), "precision": options.precision})


def tensor_types(path: Path) -> dict[str, object]:
    """Input/output dtypes and the count of int8/float32 tensors: proof of what the file computes in."""
    with quiet_native():  # LiteRT prints an INFO line per interpreter
        interp = interpreter(path, 1)
    details = interp.get_tensor_details()
    counts: dict[str, int] = {}
    for d in details:
        name = np.dtype(d["dtype"]).name
        counts[name] = counts.get(name, 0) + 1
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    res: dict[str, object] = {"input_dtype": np.dtype(inp["dtype"]).name, "output_dtype": np.dtype(out["dtype"]).name,
                              "tensor_dtypes": counts}
    for key, d in (("input_quantization", inp), ("output_quantization", out)):
        if np.dtype(d["dtype"]).kind in "iu" and d["quantization"] != (0.0, 0):
            res[key] = {"scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1])}
    return res


def export(model, example: np.ndarray, options: ExportOptions, out_dir: Path) -> ExportResult:
    """Write ``out_dir/model.tflite`` at ``options.precision`` (fp32, fp16 or int8). A multi-output graph goes by
    litert-torch instead (:mod:`exporters.tflite_litert`: onnx2tf mis-shapes detection post-processing), NCHW, with
    the graph precisions fp32, fp16, int8, int8-weights."""
    check_precision(TARGET, options)
    if options.graph:
        from exporters.tflite_litert import export_graph

        t0 = time.time()
        final = Path(out_dir) / "model.tflite"
        details = export_graph(model, example, options.precision, final, batches(options.calibration))
        return ExportResult("tflite", options.precision, final, path_size(final), time.time() - t0,
                            tuple(example.shape), details)
    if options.output not in ("logits", "argmax"):
        raise ExporterError(f"target 'tflite' has no output '{options.output}' (logits or argmax)")
    if options.input not in ("image", "pixels"):
        raise ExporterError(f"target 'tflite' has no input kind '{options.input}' (image or pixels)")
    t0 = time.time()
    float_path, float_seconds = float_file(model, example, options)
    data, fed = _convert(float_path, options)
    data = tflite_metadata.populate(data, model_info(options))
    final = Path(out_dir) / "model.tflite"
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    route = float_route(float_path)
    details = {"converter": route if options.precision == "fp32" else route + " + ai-edge-quantizer",
               "onnx2tf_seconds": round(float_seconds, 2), "calibration_images": fed,
               "output": options.output, "input": options.input,
               "layout": "NHWC input [1,H,W,3] " + ("RGB pixels 0-255" if options.input == "pixels" else
                                                    "normalized") + "; output " + ("class map [1,H,W] uint8" if options.output == "argmax"
                                                            else "logits [1,H,W,C]")}
    details.update(tensor_types(final))
    return ExportResult("tflite", options.precision, final, path_size(final), time.time() - t0,
                        tuple(example.shape), details)


#: LiteRT's CPU kernel paths by name: XNNPACK (the default delegate), builtin (XNNPACK off), reference
KERNEL_PATHS = ("xnnpack", "builtin", "reference")


def interpreter(path: Path, threads: int, kernels: str = "xnnpack"):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                "reference": OpResolverType.BUILTIN_REF}[kernels]
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ExporterError(f"LiteRT cannot load '{path}' ({kernels} kernels): {str(e)[:300]}") from None
    return interp


#: how a runtime string names each kernel path
KERNEL_NAMES = {"xnnpack": "XNNPACK", "builtin": "builtin kernels", "reference": "reference kernels"}


class TFLiteRunner:
    """NCHW float32 in, NCHW float32 logits (or an argmax model's [N, H, W] class map) out, through the LiteRT
    interpreter on one kernel path (``kernels``: xnnpack, the default; builtin; reference).

    ``execute`` (a model-ready [N, H, W, C] batch in the input's dtype -> the raw output batch) replaces the local
    interpreter's loop: :mod:`exporters.arm64` runs the same file on emulated ARM through it, with the same input
    encoding and output decoding as here."""

    def __init__(self, path: Path, threads: int = 2, kernels: str = "xnnpack",
                 execute: Callable[[np.ndarray], np.ndarray] | None = None, runtime: str = "") -> None:
        import ai_edge_litert

        if kernels not in KERNEL_PATHS:
            raise ExporterError(f"unknown LiteRT kernel path '{kernels}' ({', '.join(KERNEL_PATHS)})")
        self.path = Path(path)
        self.kernels = kernels
        self.interp = interpreter(self.path, threads, kernels if execute is None else "xnnpack")
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        if len(self.inp["shape"]) != 4:
            raise ExporterError(f"'{path}' has a {len(self.inp['shape'])}-D input; edgeseg runs image models "
                                f"with one [1,H,W,C] input")
        # a pixel-input model (edgeseg metadata) takes 0-255 RGB values: the runner converts its normalized input
        self.pixels = tflite_metadata.edgeseg_info(self.path.read_bytes())
        if self.pixels.get("input") != "pixels":
            self.pixels = {}
        self.execute = execute or self._invoke
        version = getattr(ai_edge_litert, "__version__", "")
        self.runtime = runtime or (f"LiteRT {version} interpreter, {KERNEL_NAMES[kernels]}, "
                                   f"{threads} threads").replace("  ", " ")

    @property
    def input_shape_nchw(self) -> tuple[int, int, int, int]:
        n, h, w, c = (int(v) for v in self.inp["shape"])
        return n, c, h, w

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Normalized NCHW float32 -> what the file takes: NHWC, 0-255 pixels for a pixel-input model,
        quantized for an int8/uint8 input."""
        if self.pixels:
            x = to_pixels(x, self.pixels["normalization"]["mean"], self.pixels["normalization"]["std"])
        x = np.asarray(x, np.float32).transpose(0, 2, 3, 1)
        if self.inp["dtype"] in (np.int8, np.uint8):
            scale, zero = self.inp["quantization"]
            info = np.iinfo(self.inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return np.ascontiguousarray(x).astype(self.inp["dtype"])

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(x.shape[0]):  # the converted model has batch 1
            self.interp.set_tensor(self.inp["index"], np.ascontiguousarray(x[i : i + 1]))
            self.interp.invoke()
            outs.append(self.interp.get_tensor(self.out["index"]).copy())
        return np.concatenate(outs)

    def finish(self, y: np.ndarray) -> np.ndarray:
        """The file's raw output batch -> NCHW float32 logits (dequantized), or an argmax model's class map."""
        if y.ndim == 3:  # an in-graph argmax model: the class map [N, H, W] itself
            return y.astype(np.int64)
        if self.out["dtype"] in (np.int8, np.uint8):
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32).transpose(0, 3, 1, 2) if y.ndim == 4 else y.astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.finish(self.execute(self.prepare(x)))


def load(path: Path | bytes, threads: int = 2, kernels: str = "xnnpack", outputs: tuple[str, ...] = ("logits",)):
    """LiteRT's interpreter on the file: logits (one output), or ``{name: array}`` of a multi-output graph (several
    ``outputs``, by its signature runner; ``path`` may then be the file's bytes, as a mixed-precision search makes
    them)."""
    if len(outputs) > 1:
        from exporters.tflite_litert import GraphRunner

        return GraphRunner(path, outputs, threads)
    return TFLiteRunner(Path(path), threads, kernels)


def can_run() -> tuple[bool, str]:
    return True, ""


TARGET = Target(name="tflite", suffix=".tflite", precisions=("fp32", "fp16", "int8"), default_precision="fp32",
                requires=("onnx2tf", "ai_edge_quantizer", "ai_edge_litert", "onnx"), export=export, load=load,
                can_run=can_run, graph_precisions=GRAPH_PRECISIONS)
