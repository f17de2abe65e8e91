"""Mask R-CNN export and instance parity: the static graph (:mod:`edgeseg.instance.static_graph`) to ONNX, TFLite
and Core ML, each file checked detection by detection against torchvision's eager model.

Targets and precisions: ``onnx`` fp32 (onnxruntime); ``tflite`` fp32, fp16, int8 (litert-torch route; int8 =
int8 weights and activations for convolutions and fully-connected layers, the proposal/NMS/RoIAlign arithmetic
float), int8-weights (int8 weights of those layers, float compute: the size of int8, the masks of float), int8-mixed
(int8 with the layers that break instances kept in float, found by instance parity on the validation split:
:mod:`edgeseg.instance.mixed`);
``coreml`` fp16, fp32 (checked by reference execution of the saved program off macOS, by Core ML on macOS).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeseg.errors import UsageError
from edgeseg.instance.parity import InstanceParity, compare_instances, instance_thresholds
from edgeseg.instance.static_graph import (OUTPUTS, build_static, configure_eager, paste_masks, valid_detections)

PRECISIONS: dict[str, tuple[str, ...]] = {"onnx": ("fp32",),
                                          "tflite": ("fp32", "fp16", "int8", "int8-weights", "int8-mixed"),
                                          "coreml": ("fp16", "fp32", "int8", "palettize6", "palettize8")}
FILES = {"onnx": "model.onnx", "tflite": "model.tflite", "coreml": "model.mlpackage"}


@dataclass(frozen=True)
class GraphCounts:
    """The fixed counts of the export graph (see :func:`~edgeseg.instance.static_graph.build_static`)."""

    pre_nms_top_n: int = 200
    proposals: int = 100
    candidates: int = 300
    detections: int = 20
    nms_iterations: int = 12

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class InstanceExport:
    target: str
    precision: str
    path: Path
    size_bytes: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def _to_input(img: np.ndarray) -> np.ndarray:
    return (np.asarray(img, np.float32).transpose(2, 0, 1)[None] / 255.0).astype(np.float32)


def check_precision(target: str, precision: str | None) -> str:
    if target not in PRECISIONS:
        raise UsageError(f"Mask R-CNN exports to {', '.join(PRECISIONS)}; '{target}' is not one of them")
    precision = precision or PRECISIONS[target][0]
    if precision not in PRECISIONS[target]:
        raise UsageError(f"Mask R-CNN on '{target}' has precisions {', '.join(PRECISIONS[target])}, not "
                         f"'{precision}'")
    return precision


def export_instance(model, target: str, precision: str | None, out_dir: Path, size: int,
                    counts: GraphCounts = GraphCounts(), calibration: Sequence[np.ndarray] = (),
                    metadata: dict[str, str] | None = None, validation: Sequence[tuple[np.ndarray, dict]] = (),
                    max_float_macs: float | None = None, score_threshold: float = 0.3,
                    thresholds: dict[str, float | None] | None = None,
                    log: Callable[[str], None] = print) -> InstanceExport:
    """Build the export graph of ``model`` for ``size`` x ``size`` inputs and write it for ``target``.
    ``calibration``: HWC uint8 images (int8 TFLite); ``validation``: (image, target) pairs the int8-mixed search
    checks on (the int8 gate with ``thresholds``' overrides), with ``max_float_macs`` % of the multiply-adds allowed
    in float."""
    precision = check_precision(target, precision)
    graph = build_static(model, size, **counts.to_json())
    example = np.full((1, 3, size, size), 0.5, np.float32)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILES[target]
    t0 = time.time()
    if target == "onnx":
        from exporters.onnx import export_graph

        details = export_graph(graph, example, path, OUTPUTS)
    elif target == "tflite" and precision == "int8-mixed":
        from edgeseg.instance.mixed import DEFAULT_MAX_FLOAT_MACS, export_mixed

        details = export_mixed(graph, model, example, path, calibration, [img for img, _ in validation], counts,
                               [t for _, t in validation], max_float_macs if max_float_macs is not None else
                               DEFAULT_MAX_FLOAT_MACS, score_threshold, thresholds, log)
    elif target == "tflite":
        from exporters.tflite_litert import export_graph

        details = export_graph(graph, example, precision, path, [_to_input(c) for c in calibration])
    else:
        from exporters.coreml import export_graph

        details = export_graph(graph, example, path, OUTPUTS, precision, metadata,
                               description="Mask R-CNN instance segmentation: boxes, scores, classes, "
                                           "num_detections, masks (per-box mask probabilities)")
    from exporters.base import path_size

    details["graph"] = graph.config
    return InstanceExport(target, precision, path, path_size(path), time.time() - t0, details)


def load_runner(target: str, path: Path, threads: int = 2) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    if target == "onnx":
        from exporters.onnx import GraphRunner

        return GraphRunner(Path(path), threads)
    if target == "tflite":
        from exporters.tflite_litert import GraphRunner as TFLiteGraphRunner

        return TFLiteGraphRunner(Path(path), OUTPUTS, threads)
    if target == "coreml":
        from exporters.coreml import load_graph

        return load_graph(Path(path), threads)
    raise UsageError(f"Mask R-CNN exports to {', '.join(PRECISIONS)}; '{target}' is not one of them")


def detections(out: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Valid detections of one image with masks pasted into the image, as torchvision returns them."""
    d = valid_detections({k: np.asarray(v)[0] for k, v in out.items()})
    d["masks"] = paste_masks(d["masks"], d["boxes"], size, size)
    return d


def reference_detections(model, images: Sequence[np.ndarray], counts: GraphCounts) -> list[dict[str, np.ndarray]]:
    """torchvision's eager inference with the export graph's counts (what the graph must reproduce)."""
    from edgeseg.instance.train import predict

    ref = configure_eager(copy.deepcopy(model), counts.pre_nms_top_n, counts.proposals, counts.detections)
    return predict(ref, images)


def check_instance(model, runner, target: str, precision: str, images: Sequence[np.ndarray],
                   targets: Sequence[dict] | None = None, counts: GraphCounts = GraphCounts(),
                   thresholds: dict[str, float] | None = None, score_threshold: float = 0.3,
                   references: Sequence[dict[str, np.ndarray]] | None = None) -> InstanceParity:
    """Instance parity of an exported graph on ``images`` (HWC uint8) against the eager reference
    (``references``: :func:`reference_detections` of these images, when the caller checks many files)."""
    size = int(images[0].shape[0])
    refs = reference_detections(model, images, counts) if references is None else references
    exps = [detections(runner(_to_input(img)), size) for img in images]
    num_classes = model.roi_heads.box_predictor.cls_score.out_features
    return compare_instances(refs, exps, target, precision, thresholds or instance_thresholds(precision),
                             runtime=getattr(runner, "runtime", ""), targets=targets, num_classes=num_classes,
                             score_threshold=score_threshold)


def graph_vs_eager(model, images: Sequence[np.ndarray], size: int, counts: GraphCounts) -> dict[str, Any]:
    """The export graph in PyTorch against torchvision's eager inference: identical detection lists (same
    count, classes and order), and every detection matched by the instance-parity rule (any score)."""
    import torch

    graph = build_static(model, size, **counts.to_json())
    refs = reference_detections(model, images, counts)
    outs, same = [], 0
    for img, ref in zip(images, refs):
        with torch.no_grad():
            out = {k: v.numpy() for k, v in zip(OUTPUTS, graph(torch.from_numpy(_to_input(img))))}
        d = detections(out, size)
        outs.append(d)
        same += int(len(d["boxes"]) == len(ref["boxes"]) and bool((d["labels"] == ref["labels"]).all()))
    p = compare_instances(refs, outs, "pytorch", "fp32", instance_thresholds("fp32"), score_threshold=0.0)
    return {"images": len(images), "identical_detection_lists": same, "detections": p.reference_detections,
            "matched": p.matched, "missed": p.missed, "extra": p.extra, "mask_iou_mean": p.mask_iou_mean,
            "box_iou_min": p.box_iou_min, "max_score_diff": p.max_score_diff}
