"""Core ML target: ``torch.jit.trace`` -> coremltools ``mlprogram`` ``.mlpackage``.

* Input is an ``ImageType`` (RGB) whose ``scale``/``bias`` encode the model's normalization, so an
  app passes a ``CVPixelBuffer`` straight in. Core ML has one scale for all channels: when the
  per-channel stds differ (ImageNet's do), ``scale = 1/(255*std[0])``, ``bias_c = -mean_c/std[0]``
  and an in-graph per-channel multiply by ``std[0]/std_c`` makes the result exact.
* Or a multi-array input (``input="multiarray"``): normalized NCHW float32, no scale/bias.
* Output: ``logits`` (NCHW) or ``argmax``: an in-graph class map (NHW int32; Core ML model outputs have
  no 8-bit integer type) so an app skips the per-pixel argmax; class labels are in the metadata.
* Precisions: fp32; fp16 (compute and storage); int8 = fp16 model with weights linearly quantized
  to int8 per channel (``linear_quantize_weights``); palettize4/6/8 = 4/6/8-bit k-means weight palettes
  (``-uniform``: uniform palettes, much faster to build); w8a8 = weights and activations int8 for iOS 17+
  neural engines, calibrated on the caller's images with coremltools.optimize.torch's LinearQuantizer
  (observers only, BatchNorm frozen: post-training) before conversion — the path that works on Linux.
* Deployment target iOS16 (default), iOS17 (needed by w8a8) or iOS18.
* Class labels, normalization and the caller's metadata (author, license, version, description and
  edgeseg's manifest fields) go into the model's metadata.
* Running the model needs the Core ML framework, i.e. macOS; elsewhere ``load`` returns the reference
  execution of the saved program (:mod:`exporters.coreml_reference`).
"""

from __future__ import annotations


import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from exporters.atomic import atomic_path
from exporters.native import quiet_native
from exporters.base import ExporterError, ExportOptions, ExportResult, Target, check_precision, class_map, path_size
from exporters.coreml_tools import INPUT_NAME, OUTPUT_NAME, import_ct, package_io, to_pixels

def _wrapped(model, std: tuple[float, float, float]):
    """Add the per-channel std correction the single Core ML image scale cannot express."""
    import torch

    ratio = torch.tensor([std[0] / s for s in std], dtype=torch.float32).view(1, 3, 1, 1)
    if torch.allclose(ratio, torch.ones_like(ratio)):
        return model

    class ChannelScale(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.register_buffer("ratio", ratio)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x * self.ratio)

    return ChannelScale(model).eval()


def image_scale_bias(mean, std) -> tuple[float, list[float]]:
    scale = 1.0 / (255.0 * std[0])
    return scale, [-m / std[0] for m in mean]


DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18")
PALETTE_BITS = {"palettize4": 4, "palettize6": 6, "palettize8": 8}


def _w8a8(net, example: np.ndarray, calibration) -> "object":
    """Weights and activations int8: coremltools.optimize.torch's LinearQuantizer with observers on and
    fake quantization, BatchNorm updates off (post-training calibration), finalized for conversion."""
    import torch
    from coremltools.optimize.torch.quantization import (LinearQuantizer, LinearQuantizerConfig,
                                                         ModuleLinearQuantizerConfig)

    if not calibration:
        raise ExporterError("precision 'w8a8' needs calibration images (activation ranges)")
    cfg = LinearQuantizerConfig(global_config=ModuleLinearQuantizerConfig(
        quantization_scheme="symmetric", milestones=[0, 10**9, 10**9, 0]))
    quantizer = LinearQuantizer(net, cfg)
    try:
        prepared = quantizer.prepare(example_inputs=(torch.from_numpy(np.asarray(example, np.float32)),),
                                     inplace=False)
    except Exception as e:  # noqa: BLE001 - torch.fx raises many types on untraceable code
        raise ExporterError(f"precision 'w8a8' quantizes with coremltools.optimize.torch, which traces the model "
                            f"with torch.fx; this model cannot be traced symbolically ({type(e).__name__}: "
                            f"{str(e)[:300]})") from None
    prepared.train()
    quantizer.step()
    with torch.no_grad():
        for b in calibration:
            prepared(torch.from_numpy(np.asarray(b, np.float32)))
    prepared.eval()
    return quantizer.finalize(inplace=False).eval()


def export(model, example: np.ndarray, options: ExportOptions, out_dir: Path) -> ExportResult:
    """Write ``out_dir/model.mlpackage`` at ``options.precision``."""
    import torch

    precision = options.precision
    check_precision(TARGET, options)
    if options.graph:
        t0 = time.time()
        final = Path(out_dir) / "model.mlpackage"
        details = _export_graph(model, example, final, options.outputs, precision, options.metadata,
                                options.description)
        return ExportResult("coreml", precision, final, path_size(final), time.time() - t0, tuple(example.shape),
                            details)
    if options.output not in ("logits", "argmax"):
        raise ExporterError(f"target 'coreml' has no output '{options.output}' (logits or argmax)")
    if options.input not in ("image", "multiarray"):
        raise ExporterError(f"target 'coreml' has no input kind '{options.input}' (image or multiarray)")
    target = options.deployment_target or ("iOS17" if precision == "w8a8" else "iOS16")
    if target not in DEPLOYMENT_TARGETS:
        raise ExporterError(f"deployment target '{target}' is not one of {', '.join(DEPLOYMENT_TARGETS)}")
    if precision == "w8a8" and target == "iOS16":
        raise ExporterError("precision 'w8a8' (int8 activations) needs deployment target iOS17 or later; the "
                            "iOS16 Core ML runtime has no quantize/dequantize ops (use --deployment-target iOS17)")
    ct = import_ct()
    t0 = time.time()
    mean, std = options.normalization.mean, options.normalization.std
    image_input = options.input == "image"
    net = _wrapped(model.eval().cpu(), std) if image_input else model.eval().cpu()
    x = torch.from_numpy(np.asarray(example, np.float32))
    if precision == "w8a8":
        # calibrate on what the wrapped network sees: for an image input, x * std/std[0]'s inverse
        calib = [np.asarray(b, np.float32) for b in options.calibration]
        if image_input:
            inv = np.asarray([s / std[0] for s in std], np.float32).reshape(1, 3, 1, 1)
            calib = [b * inv for b in calib]
        net = _w8a8(net, example, calib)
    if options.output == "argmax":
        net = class_map(net, "int32")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, x)
    scale, bias = image_scale_bias(mean, std)
    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    if image_input:
        inputs = [ct.ImageType(name=INPUT_NAME, shape=tuple(example.shape), scale=scale, bias=bias,
                               color_layout=ct.colorlayout.RGB)]
    else:
        inputs = [ct.TensorType(name=INPUT_NAME, shape=tuple(example.shape), dtype=np.float32)]
    with quiet_native() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ml = ct.convert(traced, inputs=inputs, outputs=[ct.TensorType(name=OUTPUT_NAME)],
                            convert_to="mlprogram", compute_precision=compute,
                            minimum_deployment_target=getattr(ct.target, target))
            ml = _compress_weights(ml, precision)
        except Exception as e:  # noqa: BLE001 - coremltools raises many types
            raise ExporterError(f"coremltools conversion failed ({precision}, {target}): {e}\n"
                                f"{log.getvalue()[-2000:]}") from e
    meta = dict(options.metadata)
    n_cls = len(options.class_names) or "C"
    ml.author = meta.pop("author", "edgeseg")
    ml.license = meta.pop("license", "")
    ml.version = meta.pop("version", "")
    ml.short_description = meta.pop("description", "Semantic segmentation: " + (
        "per-pixel class index map" if options.output == "argmax" else "per-class logits (NCHW)")
        + " for an RGB image.")
    if image_input:
        ml.input_description[INPUT_NAME] = (f"RGB image {example.shape[3]}x{example.shape[2]}; normalization "
                                            f"mean={list(mean)} std={list(std)} is applied in the model")
    else:
        ml.input_description[INPUT_NAME] = (f"normalized RGB [1, 3, {example.shape[2]}, {example.shape[3]}]: "
                                            f"(pixel/255 - mean) / std, mean={list(mean)} std={list(std)}")
    ml.output_description[OUTPUT_NAME] = (f"class index per pixel [1, {example.shape[2]}, {example.shape[3]}] "
                                          f"(int32; labels in metadata 'classes')" if options.output == "argmax"
                                          else f"class logits [1, {n_cls}, H, W]")
    meta["classes"] = json.dumps(list(options.class_names))
    meta["normalization"] = json.dumps({"mean": list(mean), "std": list(std)})
    meta.update({"precision": precision, "output": options.output, "input": options.input,
                 "deployment_target": target})
    for k, v in meta.items():
        ml.user_defined_metadata[str(k)] = str(v)
    final = Path(out_dir) / "model.mlpackage"
    with atomic_path(final) as tmp, quiet_native():
        ml.save(str(tmp))
    return ExportResult("coreml", precision, final, path_size(final), time.time() - t0,
                        tuple(example.shape),
                        {"converter": f"coremltools {ct.__version__} (torch.jit.trace -> mlprogram)",
                         "deployment_target": target, "input": options.input, "output": options.output,
                         "image_scale": scale if image_input else None, "image_bias": bias if image_input else None,
                         "weight_ops": weight_ops(final)})


def weight_ops(path: Path) -> dict[str, int]:
    """Count the weight (de)compression and activation (de)quantization ops in a saved program: proof of
    int8/palettized storage and of int8 activations (w8a8)."""
    ct = import_ct()
    with quiet_native():
        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    counts: dict[str, int] = {}
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                if op.type.startswith("constexpr") or op.type in ("const", "quantize", "dequantize"):
                    counts[op.type] = counts.get(op.type, 0) + 1
    return counts


COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")


def native_runtime() -> bool:
    """Whether the Core ML framework itself can run models here (macOS only)."""
    return platform.system() == "Darwin"


def can_run() -> tuple[bool, str]:
    """Core ML packages can always be checked: by the Core ML runtime on macOS, elsewhere by the
    reference execution of the saved program (:mod:`exporters.coreml_reference`)."""
    return True, ""


class CoreMLRunner:
    """Runs an ``.mlpackage`` with ``MLModel.predict`` (macOS only). Input: NCHW normalized float32."""

    def __init__(self, path: Path, compute_units: str = "CPU_ONLY") -> None:
        if not native_runtime():
            raise ExporterError("the Core ML runtime needs macOS (coremltools can convert and save on Linux, "
                                "not run)")
        if compute_units not in COMPUTE_UNITS:
            raise ExporterError(f"compute units must be one of {', '.join(COMPUTE_UNITS)}, not '{compute_units}'")
        ct = import_ct()
        self.ml = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        # The image input takes pixels: undo the caller's normalization with the model's own values.
        self.mean, self.std, self.input_kind = package_io(dict(self.ml.user_defined_metadata), path)
        self.runtime = f"Core ML runtime on macOS ({compute_units}), coremltools {ct.__version__}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits [N, C, H, W], or the class map [N, H, W] of an argmax model."""
        from PIL import Image

        outs = []
        for img in np.asarray(x, np.float32):
            feed = img[None] if self.input_kind == "multiarray" else Image.fromarray(to_pixels(img, self.mean, self.std))
            outs.append(np.asarray(self.ml.predict({INPUT_NAME: feed})[OUTPUT_NAME]))
        return np.concatenate(outs)


def load(path: Path, threads: int = 2, compute_units: str | None = None,
         outputs: tuple[str, ...] = ("logits",)):
    """The Core ML runtime on macOS (``compute_units``, default CPU_ONLY); elsewhere the reference
    execution of the saved program, unless a compute unit was asked for, which only macOS has. Several ``outputs``:
    a multi-output graph, run to ``{name: array}``."""
    if len(outputs) > 1:
        return _load_graph(Path(path), threads)
    if native_runtime():
        return CoreMLRunner(Path(path), compute_units or "CPU_ONLY")
    if compute_units is not None:
        raise ExporterError(f"Core ML compute units ({compute_units}) exist only in the Core ML runtime, which "
                            f"needs macOS; on this OS edgeseg checks Core ML packages by reference execution of "
                            f"the saved program (leave out the compute units)")
    from exporters.coreml_reference import ReferenceRunner

    return ReferenceRunner(Path(path), threads)


TARGET = Target(name="coreml", suffix=".mlpackage",
                precisions=("fp32", "fp16", "int8", "palettize4", "palettize6", "palettize8", "palettize4-uniform",
                            "palettize6-uniform", "palettize8-uniform", "w8a8"),
                default_precision="fp16", requires=("coremltools",), export=export, load=load, can_run=can_run,
                graph_precisions=("fp16", "fp32", "int8", "palettize6", "palettize8"))


def _compress_weights(ml, precision: str):
    """The weight storage of ``precision`` on a converted fp16 program: int8 = per-channel symmetric linear
    quantization; palettizeN[-uniform] = N-bit palettes (k-means or uniform). Other precisions unchanged."""
    from coremltools.optimize.coreml import (OpLinearQuantizerConfig, OpPalettizerConfig, OptimizationConfig,
                                             linear_quantize_weights, palettize_weights)

    if precision == "int8":
        return linear_quantize_weights(ml, config=OptimizationConfig(global_config=OpLinearQuantizerConfig(
            mode="linear_symmetric", granularity="per_channel")))
    if precision.startswith("palettize"):
        base, _, mode = precision.partition("-")
        return palettize_weights(ml, config=OptimizationConfig(global_config=OpPalettizerConfig(
            mode=mode or "kmeans", nbits=PALETTE_BITS[base])))
    return ml


def _export_graph(module, example: np.ndarray, path: Path, output_names: tuple[str, ...], precision: str = "fp16",
                  metadata: dict[str, str] | None = None, description: str = "") -> dict:
    """A multi-output graph (Mask R-CNN's export graph, input RGB in [0, 1]) as an ML Program whose input is an
    RGB image (``scale = 1/255`` in the model, so apps pass a ``CVPixelBuffer``); fp16 or fp32 compute; int8 and
    palettize6/8 store the weights compressed (fp16 compute)."""
    import torch

    ct = import_ct()
    t0 = time.time()
    x = torch.from_numpy(np.asarray(example, np.float32))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval().cpu(), x)
    inputs = [ct.ImageType(name=INPUT_NAME, shape=tuple(example.shape), scale=1.0 / 255.0, bias=[0.0, 0.0, 0.0],
                           color_layout=ct.colorlayout.RGB)]
    with quiet_native() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ml = ct.convert(traced, inputs=inputs, outputs=[ct.TensorType(name=n) for n in output_names],
                            convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                            compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16)
            ml = _compress_weights(ml, precision)
        except Exception as e:  # noqa: BLE001 - coremltools raises many types
            raise ExporterError(f"coremltools conversion of the graph failed ({precision}): {e}\n"
                                f"{log.getvalue()[-2000:]}") from e
    meta = dict(metadata or {})
    ml.author = meta.pop("author", "edgeseg")
    ml.license = meta.pop("license", "")
    ml.version = meta.pop("version", "")
    ml.short_description = description
    ml.input_description[INPUT_NAME] = f"RGB image {example.shape[3]}x{example.shape[2]}"
    meta.update({"precision": precision, "input": "image", "deployment_target": "iOS16",
                 "normalization": json.dumps({"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})})
    for k, v in meta.items():
        ml.user_defined_metadata[str(k)] = str(v)
    with atomic_path(Path(path)) as tmp, quiet_native():
        ml.save(str(tmp))
    return {"converter": f"coremltools {ct.__version__} (torch.jit.trace -> mlprogram)", "deployment_target": "iOS16",
            "convert_seconds": round(time.time() - t0, 2)}


def _load_graph(path: Path, threads: int = 2):
    """``{output name: array}`` from an exported graph: the Core ML runtime on macOS, elsewhere the reference
    execution of the saved program. Input: NCHW RGB float32 in [0, 1]."""
    from exporters.coreml_reference import GraphReferenceRunner

    if native_runtime():
        return GraphCoreMLRunner(Path(path))
    return GraphReferenceRunner(Path(path), threads)


class GraphCoreMLRunner:
    def __init__(self, path: Path, compute_units: str = "CPU_ONLY") -> None:
        ct = import_ct()
        self.ml = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        self.runtime = f"Core ML runtime on macOS ({compute_units}), coremltools {ct.__version__}"

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from PIL import Image

        pixels = np.clip(np.round(np.asarray(x, np.float32)[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
        return {k: np.asarray(v) for k, v in self.ml.predict({INPUT_NAME: Image.fromarray(pixels)}).items()}
