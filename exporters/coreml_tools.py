"""What every Core ML module shares: coremltools imported quietly and without TensorFlow, the names of an edgeseg
package's tensors, and the pixel/normalization conversions between an app's frame and the model input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from exporters.native import preload_triton, quiet_native, without_modules
from exporters.base import ExporterError

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


# Packages coremltools' ``_deps`` imports whenever they are installed, for frontends edgeseg never uses (it converts
# ``torch.jit.trace`` graphs): TensorFlow (7-8 s, ~600 MB), ExecuTorch (its ``exir`` for the edge-dialect frontend,
# which parses a YAML of every edge op: ~2 s) and torchao (its quantized-op lowering). Measured with torch already
# imported: ``import coremltools`` 5.0 s with ExecuTorch's extra installed, 3.0 s with these hidden.
CT_HIDDEN = ("tensorflow", "executorch", "torchao")


def import_ct():
    """coremltools, imported quietly and without the packages of ``CT_HIDDEN`` (unless the process loaded them)."""
    preload_triton()  # in case TensorFlow is imported anyway (see exporters/native.py)
    with quiet_native(), warnings.catch_warnings(), without_modules(*CT_HIDDEN):
        warnings.simplefilter("ignore")
        import coremltools as ct
    return ct


def package_io(meta: dict, path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Normalization mean/std and input kind from an edgeseg package's user-defined metadata."""
    norm = json.loads(meta.get("normalization", "null") or "null")
    if norm is None:
        raise ExporterError(f"'{path}' has no 'normalization' metadata; re-export it with edgeseg")
    return np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32), meta.get("input", "image")


def to_pixels(img: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """A normalized CHW image back to the 8-bit HWC RGB pixels an app's camera frame would hold."""
    rgb = (img.transpose(1, 2, 0) * std + mean) * 255.0
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
