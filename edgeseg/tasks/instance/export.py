"""Mask R-CNN export and instance parity: the static graph (:mod:`edgeseg.tasks.instance.static_graph`) to ONNX, TFLite
and Core ML, each file checked detection by detection against torchvision's eager model.

Targets and precisions: ``onnx`` fp32 (onnxruntime); ``tflite`` fp32, fp16, int8 (litert-torch route; int8 =
int8 weights and activations for convolutions and fully-connected layers, the proposal/NMS/RoIAlign arithmetic
float), int8-weights (int8 weights of those layers, float compute: the size of int8, the masks of float), int8-mixed
(int8 with the layers that break instances kept in float, found by instance parity on the validation split:
:mod:`edgeseg.tasks.instance.mixed`);
``coreml`` fp16, fp32 (checked by reference execution of the saved program off macOS, by Core ML on macOS).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeseg.tasks.instance.check import FILES, GraphCounts, check_precision, to_input
from edgeseg.tasks.instance.static_graph import OUTPUTS, build_static
from exporters import TARGETS, ExportOptions, ExportResult
from exporters.base import path_size

DESCRIPTION = ("Mask R-CNN instance segmentation: boxes, scores, classes, num_detections, masks (per-box mask "
               "probabilities)")


def export_instance(model, target: str, precision: str | None, out_dir: Path, size: int,
                    counts: GraphCounts = GraphCounts(), calibration: Sequence[np.ndarray] = (),
                    metadata: dict[str, str] | None = None, validation: Sequence[tuple[np.ndarray, dict]] = (),
                    max_float_macs: float | None = None, score_threshold: float = 0.3,
                    thresholds: dict[str, float | None] | None = None,
                    log: Callable[[str], None] = print) -> ExportResult:
    """Build the export graph of ``model`` for ``size`` x ``size`` inputs and write it for ``target``.
    ``calibration``: HWC uint8 images (int8 TFLite); ``validation``: (image, target) pairs the int8-mixed search
    checks on (the int8 gate with ``thresholds``' overrides), with ``max_float_macs`` % of the multiply-adds allowed
    in float."""
    precision = check_precision(target, precision)
    graph = build_static(model, size, **counts.to_json())
    example = np.full((1, 3, size, size), 0.5, np.float32)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if target == "tflite" and precision == "int8-mixed":
        from edgeseg.tasks.instance.mixed import DEFAULT_MAX_FLOAT_MACS, export_mixed

        t0 = time.time()
        path = out_dir / FILES[target]
        details = export_mixed(graph, model, example, path, calibration, [img for img, _ in validation], counts,
                               [t for _, t in validation], max_float_macs if max_float_macs is not None else
                               DEFAULT_MAX_FLOAT_MACS, score_threshold, thresholds, log)
        exp = ExportResult(target, precision, path, path_size(path), time.time() - t0, tuple(example.shape), details)
    else:
        options = ExportOptions(precision, calibration=[to_input(c) for c in calibration], outputs=OUTPUTS,
                                metadata=dict(metadata or {}), description=DESCRIPTION)
        exp = TARGETS[target].export(graph, example, options, out_dir)
    exp.details["graph"] = graph.config
    return exp
