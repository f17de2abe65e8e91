"""OpenVINO target: an IR (``model.xml`` + ``model.bin``) for x86 and ARM boards, run with the OpenVINO runtime.

fp32 converts the PyTorch model with ``openvino.convert_model``. int8 converts an NNCF-quantized model (NNCF
PTQ on ``options.calibration``, or the quantizers a model from ``edgeseg quantize`` carries): OpenVINO turns
the FakeQuantize ops into int8 kernels, and the export record lists the precisions the compiled CPU model
really runs in (``runtimePrecision`` of each op) as proof.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from exporters.atomic import atomic_path
from exporters.base import ExporterError, ExportOptions, ExportResult, Target, check_precision, path_size


# OpenVINO runs float ops in bf16 on CPUs that have it (AVX512_BF16, AMX) unless told otherwise: edgeseg
# checks and times what the file says (fp32, or int8 where quantized), not a precision the CPU picked
_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def _ov():
    from exporters.native import preload_triton

    preload_triton()
    import openvino as ov

    return ov


def export(model, example: np.ndarray, options: ExportOptions, out_dir: Path) -> ExportResult:
    """Write ``out_dir/model.xml`` and ``model.bin`` (fp32 or int8)."""
    import torch

    check_precision(TARGET, options)
    ov = _ov()
    t0 = time.time()
    details: dict[str, object] = {"converter": f"openvino.convert_model {ov.__version__}"}
    x = torch.from_numpy(np.asarray(example, np.float32))
    if options.precision == "int8":
        from exporters.nncf_tools import int8_model

        model = int8_model(model, example, options, details)
    final = Path(out_dir) / "model.xml"
    with atomic_path(final.with_suffix(".bin")) as tmp_bin, atomic_path(final) as tmp_xml:
        try:
            converted = ov.convert_model(model.eval().cpu(), example_input=x)
            ov.save_model(converted, str(tmp_xml), compress_to_fp16=False)
        except Exception as e:  # noqa: BLE001 - the converter raises many types
            raise ExporterError(f"OpenVINO conversion failed: {str(e)[:500]}") from e
        tmp_xml.with_suffix(".bin").replace(tmp_bin)  # save_model writes the .bin beside the .xml
        details["runtime_precisions"] = runtime_precisions_of(tmp_xml, tmp_bin)
    if options.precision == "int8" and not {"u8", "i8"} & set(details["runtime_precisions"]):  # type: ignore[arg-type]
        raise ExporterError("the OpenVINO IR runs no op in int8 on this CPU; the quantization did not survive")
    size = path_size(final) + path_size(final.with_suffix(".bin"))
    return ExportResult("openvino", options.precision, final, size, time.time() - t0, tuple(example.shape), details)


def from_onnx(onnx_path: Path, example: np.ndarray, out_dir: Path, quantizer: str) -> ExportResult:
    """An OpenVINO IR of a (QDQ) ONNX model, e.g. NNCF's accuracy-controlled result."""
    ov = _ov()
    t0 = time.time()
    final = Path(out_dir) / "model.xml"
    details: dict[str, object] = {"converter": f"openvino.convert_model {ov.__version__} (from ONNX)",
                                  "quantizer": quantizer}
    with atomic_path(final.with_suffix(".bin")) as tmp_bin, atomic_path(final) as tmp_xml:
        try:
            ov.save_model(ov.convert_model(str(onnx_path)), str(tmp_xml), compress_to_fp16=False)
        except Exception as e:  # noqa: BLE001
            raise ExporterError(f"OpenVINO conversion of '{onnx_path}' failed: {str(e)[:500]}") from e
        tmp_xml.with_suffix(".bin").replace(tmp_bin)
        details["runtime_precisions"] = runtime_precisions_of(tmp_xml, tmp_bin)
    size = path_size(final) + path_size(final.with_suffix(".bin"))
    return ExportResult("openvino", "int8", final, size, time.time() - t0, tuple(example.shape), details)


def runtime_precisions_of(xml: Path, weights: Path) -> dict[str, int]:
    ov = _ov()
    compiled = ov.Core().compile_model(ov.Core().read_model(str(xml), str(weights)), "CPU", _CONFIG)
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info:
            p = str(info["runtimePrecision"].astype(str))
            counts[p] = counts.get(p, 0) + 1
    return dict(sorted(counts.items()))


class OpenVINORunner:
    """NCHW float32 in, NCHW float32 logits out, compiled for this CPU."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        ov = _ov()
        try:
            core = ov.Core()
            self.compiled = core.compile_model(str(path), "CPU", {**_CONFIG, "INFERENCE_NUM_THREADS": threads})
        except Exception as e:  # noqa: BLE001 - the runtime raises RuntimeError and friends
            raise ExporterError(f"OpenVINO cannot load '{path}': {str(e)[:300]}") from None
        self.runtime = f"OpenVINO {ov.__version__} CPU, {threads} threads"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return np.concatenate([np.asarray(self.compiled(x[i : i + 1])[0]) for i in range(x.shape[0])])


def load(path: Path, threads: int = 2) -> OpenVINORunner:
    return OpenVINORunner(Path(path), threads)


def can_run() -> tuple[bool, str]:
    return True, ""


TARGET = Target(name="openvino", suffix=".xml", precisions=("fp32", "int8"), default_precision="fp32",
                requires=("openvino",), export=export, load=load, can_run=can_run, extra="quantize")
