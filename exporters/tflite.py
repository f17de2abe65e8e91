"""TFLite target: PyTorch -> ONNX -> TF SavedModel (onnx2tf) -> TF Lite converter; run with LiteRT.

* onnx2tf turns the NCHW ONNX graph into an NHWC TensorFlow SavedModel (input ``[1, H, W, 3]``).
  That SavedModel is cached in ``options.work_dir`` and shared by every precision, because the
  onnx2tf step is the slow one and the TF Lite converter re-quantizes it in seconds.
* fp32: plain conversion. fp16: float16 weights (``supported_types=[tf.float16]``), computed in
  float32 by XNNPACK on CPUs. int8: full-integer quantization (``TFLITE_BUILTINS_INT8``, int8 input
  and output) calibrated on the representative images the caller passes.
* ``output="argmax"``: the same SavedModel's logits followed by ``ARG_MAX`` and ``CAST`` to uint8, so an app
  reads the [1, H, W] class map directly (int8 models compute the argmax on int8 logits).
* ``input="pixels"``: the normalization moves into the graph, so the model takes RGB pixel values 0-255 as a
  camera frame holds them (float32; uint8 for int8 models, whose input quantization is then exactly scale 1,
  zero point 0). This is what MediaPipe Tasks and most Android code expect. ``input="image"`` (the default)
  takes the normalized float tensor (int8 models: int8 input with the stored scale/zero point).
* Every file carries TFLite metadata (:mod:`exporters.tflite_metadata`): normalization, labels, and an
  ``edgeseg`` entry the runner reads to feed the model correctly.
* onnx2tf runs a check inference on a sample file it downloads when the input looks like an image
  (``calibration_image_sample_data_20x128x128x3_float32.npy``), even offline; we run it in a
  temporary working directory that already holds such a file, built from the caller's calibration
  images, so nothing is fetched.

The Runner takes NCHW float32 (normalized) input and returns NCHW float32 logits; it transposes to
and from NHWC and (de)quantizes int8 tensors with the scale/zero-point stored in the model.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from exporters import tflite_metadata
from exporters.atomic import atomic_path
from exporters.native import import_tensorflow, quiet_native
from exporters.base import (ExporterError, ExportOptions, ExportResult, Target, batches, check_precision, iter_batches,
                            path_size)
from exporters.tflite_litert import PRECISIONS as GRAPH_PRECISIONS

ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


@contextlib.contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _onnx2tf_sample(calibration: Sequence[np.ndarray], mean, std) -> np.ndarray:
    """20x128x128x3 images in [0, 1] from the calibration set (onnx2tf's check-inference input)."""
    import torch
    import torch.nn.functional as F

    imgs = list(itertools.islice(iter_batches(calibration), 20))
    if not imgs:
        return np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)
    x = torch.from_numpy(np.concatenate(imgs))
    x = x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    x = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False).clamp(0, 1)
    x = x.permute(0, 2, 3, 1).numpy().astype(np.float32)
    reps = int(np.ceil(20 / len(x)))
    return np.concatenate([x] * reps)[:20]


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


def saved_model(model, example: np.ndarray, options: ExportOptions) -> tuple[Path, float]:
    """Return the NHWC SavedModel directory for ``model`` (converted once per input kind, cached in work_dir)."""
    from exporters.onnx import constants_as_initializers, fold_constants, write_onnx

    work = Path(options.work_dir) if options.work_dir else Path(tempfile.mkdtemp(prefix="edgeseg-tf-"))
    pixels = options.input == "pixels"
    # absolute: onnx2tf runs in a scratch working directory
    sm = work.resolve() / ("tf_savedmodel-pixels" if pixels else "tf_savedmodel")
    if pixels:
        model = _pixel_input(model, options.normalization.mean, options.normalization.std)
        example = np.full_like(example, 128.0)
    if (sm / "saved_model.pb").exists():
        return sm, 0.0
    t0 = time.time()
    tf = import_tensorflow()
    import onnx2tf

    # Keras numbers layer names per process (model_2/convolution_44...): start from zero so that the same model
    # converts to the same tensor names, and so the same bytes, whatever was converted before in this process
    tf.keras.backend.clear_session()
    with contextlib.suppress(ImportError):
        import tf_keras

        tf_keras.backend.clear_session()

    with atomic_path(sm) as tmp, tempfile.TemporaryDirectory(prefix="edgeseg-onnx2tf-") as scratch:
        scratch = Path(scratch)
        onnx_path = scratch / "model.onnx"
        write_onnx(model, example, onnx_path)
        constants_as_initializers(onnx_path)
        fold_constants(onnx_path)
        np.save(scratch / ONNX2TF_SAMPLE, _onnx2tf_sample(options.calibration, options.normalization.mean,
                                                          options.normalization.std))
        with _in_dir(scratch), quiet_native() as log, _stop_after_saved_model(tf):
            try:
                onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(tmp),
                                output_signaturedefs=True, copy_onnx_input_output_names_to_tflite=True,
                                non_verbose=True, verbosity="error")
            except _SavedModelWritten:
                pass
            except BaseException as e:  # onnx2tf calls sys.exit on some failures
                raise ExporterError(f"onnx2tf could not convert the model: {e!r}\n{log.getvalue()[-2000:]}") from e
        if not (tmp / "saved_model.pb").exists():  # onnx2tf logs a failed SavedModel write and goes on
            raise ExporterError(f"onnx2tf wrote no SavedModel:\n{log.getvalue()[-2000:]}")
        for f in tmp.glob("*.tflite"):  # in case an onnx2tf version writes float files before its SavedModel
            f.unlink()
    return sm, time.time() - t0


class _SavedModelWritten(Exception):
    """Raised inside onnx2tf once its SavedModel is on disk (see :func:`_stop_after_saved_model`)."""


@contextlib.contextmanager
def _stop_after_saved_model(tf) -> Iterator[None]:
    """End ``onnx2tf.convert`` where it starts its own TF Lite conversions.

    onnx2tf always converts its SavedModel to float32 and float16 .tflite files itself (no option turns that
    off), right after writing the SavedModel; edgeseg converts the SavedModel with its own settings and
    metadata, so those two conversions were thrown away: 3-12 s per model (measured, see docs/export-and-parity.md). The first
    ``TFLiteConverter.from_concrete_functions`` call raises, which unwinds out of ``convert``.
    """
    cls = tf.lite.TFLiteConverter
    original = cls.__dict__["from_concrete_functions"]

    def stop(*args, **kwargs):
        raise _SavedModelWritten

    cls.from_concrete_functions = stop
    try:
        yield
    finally:
        cls.from_concrete_functions = original


def _argmax_converter(tf, sm: Path):
    """A converter for the SavedModel's logits followed by an in-graph argmax over classes, cast to uint8:
    the app gets the class map directly (``ARG_MAX`` + ``CAST``, both TFLite builtins)."""
    loaded = tf.saved_model.load(str(sm))
    sig = loaded.signatures["serving_default"]
    (name, spec), = sig.structured_input_signature[1].items()

    @tf.function(input_signature=[tf.TensorSpec(spec.shape, tf.float32, name=name)])
    def classes(image):
        logits = list(sig(**{name: image}).values())[0]
        return {"classes": tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.uint8)}

    return tf.lite.TFLiteConverter.from_concrete_functions([classes.get_concrete_function()], loaded)


def _convert(sm: Path, options: ExportOptions) -> tuple[bytes, int]:
    """The TFLite file and the number of calibration images the converter was fed (int8; else 0)."""
    tf = import_tensorflow()
    fed = 0
    if options.output == "argmax":
        conv = _argmax_converter(tf, sm)
    else:
        conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    if options.precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif options.precision == "int8":
        if not len(options.calibration):
            raise ExporterError("int8 TFLite needs calibration images; none were given")

        def representative():  # one image at a time: the calibration set is never copied whole
            nonlocal fed
            for k, s in enumerate(iter_batches(options.calibration)):
                if options.input == "pixels":
                    s = to_pixels(s, options.normalization.mean, options.normalization.std)
                    if k == 0:  # one black and one white pixel make the input range exactly 0-255, so the
                        # uint8 input's quantization is scale 1, zero point 0: the app feeds camera bytes unchanged
                        s[0, :, 0, 0], s[0, :, 0, 1] = 0.0, 255.0
                fed += 1
                yield [np.ascontiguousarray(s.transpose(0, 2, 3, 1))]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8 if options.input == "pixels" else tf.int8
        if options.output != "argmax":  # a class map is already uint8
            conv.inference_output_type = tf.int8
    with quiet_native() as log:
        try:
            return conv.convert(), fed
        except Exception as e:  # noqa: BLE001 - the converter raises ConverterError and friends
            raise ExporterError(f"TF Lite converter failed ({options.precision}): {e}\n{log.getvalue()[-2000:]}") from e


def _debug_converter(tf, sm: Path, calibration: Sequence[np.ndarray]):
    samples = batches(calibration)
    if not samples:
        raise ExporterError("mixed-precision TFLite needs calibration images; none were given")

    def representative():
        for s in samples:
            yield [np.ascontiguousarray(s.transpose(0, 2, 3, 1))]

    conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    # float kernels allowed beside int8 ones: the layers kept in float need them
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv, representative


def layer_sensitivity(sm: Path, calibration: Sequence[np.ndarray]) -> list[dict[str, object]]:
    """Each quantized layer's error on the calibration images, most sensitive first: the TF Lite quantization
    debugger compares every int8 op output with its float counterpart; sensitivity = RMSE / quantization scale
    (the error in quantization steps, comparable across layers)."""
    import csv

    tf = import_tensorflow()
    conv, rep = _debug_converter(tf, sm, calibration)
    with quiet_native() as log:
        try:
            debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=rep)
            debugger.run()
        except Exception as e:  # noqa: BLE001
            raise ExporterError(f"TF Lite quantization debugger failed: {e}\n{log.getvalue()[-1500:]}") from e
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(r["scale"] or 0)
        if scale <= 0:
            continue
        rows.append({"op": r["op_name"], "tensor": r["tensor_name"],
                     "sensitivity": round(float(r["mean_squared_error"]) ** 0.5 / scale, 5)})
    return sorted(rows, key=lambda r: -float(r["sensitivity"]))  # type: ignore[arg-type]


def convert_mixed(sm: Path, calibration: Sequence[np.ndarray], float_tensors: Sequence[str]) -> bytes:
    """int8 TFLite with the ops producing ``float_tensors`` kept in float (selective quantization: the debugger's
    denylist); float32 input and output."""
    tf = import_tensorflow()
    conv, rep = _debug_converter(tf, sm, calibration)
    with quiet_native() as log:
        try:
            options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_tensors))
            debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=rep,
                                                                 debug_options=options)
            return debugger.get_nondebug_quantized_model()
        except Exception as e:  # noqa: BLE001
            raise ExporterError(f"mixed-precision conversion failed: {e}\n{log.getvalue()[-1500:]}") from e


def op_signature(path: Path) -> tuple[tuple[str, str], ...]:
    """Every op of a TFLite file as (type, dtype of its first input), in graph order: two files with the same
    signature run the same kernels (weights and scales differ, work does not), so they take the same time."""
    with quiet_native():
        interp = interpreter(path, 1, xnnpack=False)
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
    sm, sm_seconds = saved_model(model, example, options)
    data, fed = _convert(sm, options)
    data = tflite_metadata.populate(data, model_info(options))
    final = Path(out_dir) / "model.tflite"
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    details = {"converter": "onnx2tf + TF Lite converter", "onnx2tf_seconds": round(sm_seconds, 2),
               "calibration_images": fed,
               "output": options.output, "input": options.input,
               "layout": "NHWC input [1,H,W,3] " + ("RGB pixels 0-255" if options.input == "pixels" else
                                                    "normalized") + "; output " + ("class map [1,H,W] uint8" if options.output == "argmax"
                                                            else "logits [1,H,W,C]")}
    details.update(tensor_types(final))
    return ExportResult("tflite", options.precision, final, path_size(final), time.time() - t0,
                        tuple(example.shape), details)


def interpreter(path: Path, threads: int, xnnpack: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ExporterError(f"LiteRT cannot load '{path}': {str(e)[:300]}") from None
    return interp


class TFLiteRunner:
    """NCHW float32 in, NCHW float32 logits (or an argmax model's [N, H, W] class map) out, through the LiteRT
    interpreter (XNNPACK by default)."""

    def __init__(self, path: Path, threads: int = 2, xnnpack: bool = True) -> None:
        import ai_edge_litert

        self.path = Path(path)
        self.interp = interpreter(self.path, threads, xnnpack)
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        if len(self.inp["shape"]) != 4:
            raise ExporterError(f"'{path}' has a {len(self.inp['shape'])}-D input; edgeseg runs image models "
                                f"with one [1,H,W,C] input")
        # a pixel-input model (edgeseg metadata) takes 0-255 RGB values: the runner converts its normalized input
        self.pixels = tflite_metadata.edgeseg_info(self.path.read_bytes())
        if self.pixels.get("input") != "pixels":
            self.pixels = {}
        version = getattr(ai_edge_litert, "__version__", "")
        self.runtime = (f"LiteRT {version} interpreter, {'XNNPACK' if xnnpack else 'builtin kernels'}, "
                        f"{threads} threads").replace("  ", " ")

    @property
    def input_shape_nchw(self) -> tuple[int, int, int, int]:
        n, h, w, c = (int(v) for v in self.inp["shape"])
        return n, c, h, w

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.pixels:
            x = to_pixels(x, self.pixels["normalization"]["mean"], self.pixels["normalization"]["std"])
        x = np.asarray(x, np.float32).transpose(0, 2, 3, 1)
        if self.inp["dtype"] in (np.int8, np.uint8):
            scale, zero = self.inp["quantization"]
            info = np.iinfo(self.inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.inp["dtype"])
        outs = []
        for i in range(x.shape[0]):  # the converted model has batch 1
            self.interp.set_tensor(self.inp["index"], np.ascontiguousarray(x[i : i + 1]).astype(self.inp["dtype"]))
            self.interp.invoke()
            outs.append(self.interp.get_tensor(self.out["index"]).copy())
        y = np.concatenate(outs)
        if y.ndim == 3:  # an in-graph argmax model: the class map [N, H, W] itself
            return y.astype(np.int64)
        if self.out["dtype"] in (np.int8, np.uint8):
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32).transpose(0, 3, 1, 2) if y.ndim == 4 else y.astype(np.float32)


def load(path: Path | bytes, threads: int = 2, xnnpack: bool = True, outputs: tuple[str, ...] = ("logits",)):
    """LiteRT's interpreter on the file: logits (one output), or ``{name: array}`` of a multi-output graph (several
    ``outputs``, by its signature runner; ``path`` may then be the file's bytes, as a mixed-precision search makes
    them)."""
    if len(outputs) > 1:
        from exporters.tflite_litert import GraphRunner

        return GraphRunner(path, outputs, threads)
    return TFLiteRunner(Path(path), threads, xnnpack)


def can_run() -> tuple[bool, str]:
    return True, ""


TARGET = Target(name="tflite", suffix=".tflite", precisions=("fp32", "fp16", "int8"), default_precision="fp32",
                requires=("tensorflow", "onnx2tf", "ai_edge_litert", "onnx"), export=export, load=load,
                can_run=can_run, graph_precisions=GRAPH_PRECISIONS)
