"""ONNX target: torch's TorchScript-based exporter (opset 17), run with onnxruntime.

The legacy exporter (``dynamo=False``) is used because it is fast (< 1 s), deterministic and was
measured to match PyTorch to 8e-6 on edgeseg's architectures; the graph it writes is also what
onnx2tf converts best.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from exporters._atomic import atomic_path
from exporters.base import ExporterError, ExportOptions, ExportResult, Target, path_size

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def write_onnx(model, example: np.ndarray, path: Path) -> None:
    """Export ``model`` (eval mode, CPU) to ``path`` with a fixed input shape."""
    import torch

    model = model.eval().cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(np.asarray(example, np.float32)),), str(path),
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)


def export(model, example: np.ndarray, options: ExportOptions, out_dir: Path) -> ExportResult:
    """Write ``out_dir/model.onnx`` (fp32)."""
    if options.precision != "fp32":
        raise ExporterError(f"target 'onnx' exports fp32 only, not '{options.precision}'")
    t0 = time.time()
    final = Path(out_dir) / "model.onnx"
    with atomic_path(final) as tmp:
        try:
            write_onnx(model, example, tmp)
        except Exception as e:  # noqa: BLE001 - torch raises many types; name the step and keep the text
            raise ExporterError(f"PyTorch -> ONNX export failed: {str(e)[:500]}") from e
    return ExportResult("onnx", "fp32", final, path_size(final), time.time() - t0, tuple(example.shape),
                        {"opset": OPSET, "exporter": "torch.onnx (TorchScript-based)"})


def load(path: Path, threads: int = 2) -> "OnnxRunner":
    return OnnxRunner(Path(path), threads)


def can_run() -> tuple[bool, str]:
    return True, ""


class OnnxRunner:
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int = 2) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExporterError(f"onnxruntime cannot load '{path}': {str(e)[:300]}") from None
        self.input = self.session.get_inputs()[0]
        self.runtime = f"onnxruntime {ort.__version__} CPU, {threads} threads"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        # the exported graph has a fixed batch of 1 (what a phone runs)
        return np.concatenate([self.session.run(None, {self.input.name: x[i : i + 1]})[0]
                               for i in range(x.shape[0])])


TARGET = Target(name="onnx", suffix=".onnx", precisions=("fp32",), default_precision="fp32",
                requires=("onnx", "onnxruntime"), export=export, load=load, can_run=can_run)
