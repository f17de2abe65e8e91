"""Core ML target: ``torch.jit.trace`` -> coremltools ``mlprogram`` ``.mlpackage``.

* Input is an ``ImageType`` (RGB) whose ``scale``/``bias`` encode the model's normalization, so an
  app passes a ``CVPixelBuffer`` straight in. Core ML has one scale for all channels: when the
  per-channel stds differ (ImageNet's do), ``scale = 1/(255*std[0])``, ``bias_c = -mean_c/std[0]``
  and an in-graph per-channel multiply by ``std[0]/std_c`` makes the result exact.
* Precisions: fp32; fp16 (compute and storage); int8 = fp16 model with weights linearly quantized
  to int8 per channel (``linear_quantize_weights``); palettize6 = 6-bit k-means weight palettes.
* Class labels and the caller's metadata go into the model's user-defined metadata.
* Running the model needs the Core ML framework, i.e. macOS: ``load`` raises on other systems
  (coremltools' ``predict`` says "Model prediction is only supported on macOS").
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from exporters._atomic import atomic_path
from exporters._tf import preload_triton, quiet_native
from exporters.base import ExporterError, ExportOptions, ExportResult, Target, path_size

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def _import_ct():
    preload_triton()  # coremltools imports TensorFlow when it is installed (see exporters/_tf.py)
    with quiet_native(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct
    return ct


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


def export(model, example: np.ndarray, options: ExportOptions, out_dir: Path) -> ExportResult:
    """Write ``out_dir/model.mlpackage`` at ``options.precision``."""
    import torch

    if options.precision not in TARGET.precisions:
        raise ExporterError(f"target 'coreml' has no precision '{options.precision}'")
    if options.output != "logits":
        raise ExporterError(f"target 'coreml' does not support output '{options.output}' yet")
    ct = _import_ct()
    t0 = time.time()
    mean, std = options.normalization.mean, options.normalization.std
    net = _wrapped(model.eval().cpu(), std)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.from_numpy(np.asarray(example, np.float32)))
    scale, bias = image_scale_bias(mean, std)
    precision = ct.precision.FLOAT32 if options.precision == "fp32" else ct.precision.FLOAT16
    with quiet_native() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ml = ct.convert(
                traced,
                inputs=[ct.ImageType(name=INPUT_NAME, shape=tuple(example.shape), scale=scale, bias=bias,
                                     color_layout=ct.colorlayout.RGB)],
                outputs=[ct.TensorType(name=OUTPUT_NAME)],
                convert_to="mlprogram",
                compute_precision=precision,
                minimum_deployment_target=ct.target.iOS16,
            )
            if options.precision == "int8":
                from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

                cfg = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric",
                                                                               granularity="per_channel"))
                ml = linear_quantize_weights(ml, config=cfg)
            elif options.precision == "palettize6":
                from coremltools.optimize.coreml import OpPalettizerConfig, OptimizationConfig, palettize_weights

                ml = palettize_weights(ml, config=OptimizationConfig(
                    global_config=OpPalettizerConfig(mode="kmeans", nbits=6)))
        except Exception as e:  # noqa: BLE001 - coremltools raises many types
            raise ExporterError(f"coremltools conversion failed ({options.precision}): {e}\n"
                                f"{log.getvalue()[-2000:]}") from e
    ml.short_description = "Semantic segmentation: per-class logits (NCHW) for an RGB image."
    ml.input_description[INPUT_NAME] = (f"RGB image {example.shape[3]}x{example.shape[2]}; normalization "
                                        f"mean={list(mean)} std={list(std)} is applied in the model")
    ml.output_description[OUTPUT_NAME] = f"class logits [1, {len(options.class_names) or 'C'}, H, W]"
    meta = dict(options.metadata)
    meta["classes"] = json.dumps(list(options.class_names))
    meta["normalization"] = json.dumps({"mean": list(mean), "std": list(std)})
    meta["precision"] = options.precision
    for k, v in meta.items():
        ml.user_defined_metadata[str(k)] = str(v)
    final = Path(out_dir) / "model.mlpackage"
    with atomic_path(final) as tmp, quiet_native():
        ml.save(str(tmp))
    return ExportResult("coreml", options.precision, final, path_size(final), time.time() - t0,
                        tuple(example.shape),
                        {"converter": f"coremltools {ct.__version__} (torch.jit.trace -> mlprogram)",
                         "deployment_target": "iOS16", "image_scale": scale, "image_bias": bias,
                         "weight_ops": weight_ops(final)})


def weight_ops(path: Path) -> dict[str, int]:
    """Count the weight (de)compression ops in a saved program: proof of int8/palettized storage."""
    ct = _import_ct()
    with quiet_native():
        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    counts: dict[str, int] = {}
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                if op.type.startswith("constexpr") or op.type == "const":
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
        ct = _import_ct()
        self.ml = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        # The image input takes pixels: undo the caller's normalization with the model's own values.
        norm = json.loads(self.ml.user_defined_metadata.get("normalization", "null") or "null")
        if norm is None:
            raise ExporterError(f"'{path}' has no 'normalization' metadata; re-export it with edgeseg")
        self.mean, self.std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
        self.runtime = f"Core ML runtime on macOS ({compute_units}), coremltools {ct.__version__}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from PIL import Image

        outs = []
        for img in np.asarray(x, np.float32):
            rgb = (img.transpose(1, 2, 0) * self.std + self.mean) * 255.0
            pil = Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
            outs.append(np.asarray(self.ml.predict({INPUT_NAME: pil})[OUTPUT_NAME], np.float32))
        return np.concatenate(outs)


def load(path: Path, threads: int = 2, compute_units: str | None = None):
    """The Core ML runtime on macOS (``compute_units``, default CPU_ONLY); elsewhere the reference
    execution of the saved program, unless a compute unit was asked for, which only macOS has."""
    if native_runtime():
        return CoreMLRunner(Path(path), compute_units or "CPU_ONLY")
    if compute_units is not None:
        raise ExporterError(f"Core ML compute units ({compute_units}) exist only in the Core ML runtime, which "
                            f"needs macOS; on this OS edgeseg checks Core ML packages by reference execution of "
                            f"the saved program (leave out the compute units)")
    from exporters.coreml_reference import ReferenceRunner

    return ReferenceRunner(Path(path), threads)


TARGET = Target(name="coreml", suffix=".mlpackage", precisions=("fp32", "fp16", "int8", "palettize6"),
                default_precision="fp16", requires=("coremltools",), export=export, load=load, can_run=can_run)
