"""Mask R-CNN exports as the instance task checks them: the targets and precisions, the export graph's fixed
counts, the runner of each exported file, and instance parity of a file against torchvision's eager model."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeseg.core.errors import UsageError
from edgeseg.tasks.instance.parity import InstanceParity, compare_instances, instance_thresholds
from edgeseg.tasks.instance.static_graph import OUTPUTS, build_static, configure_eager, paste_masks, valid_detections
from exporters import TARGETS

#: per target, the precisions of the export graph: the target's own (``Target.graph_precisions``; the first is the
#: default) and, for TFLite, the int8-mixed route (:mod:`edgeseg.tasks.instance.mixed`)
PRECISIONS: dict[str, tuple[str, ...]] = {t: TARGETS[t].graph_precisions + (("int8-mixed",) if t == "tflite" else ())
                                          for t in ("onnx", "tflite", "coreml")}
FILES = {"onnx": "model.onnx", "tflite": "model.tflite", "coreml": "model.mlpackage"}


@dataclass(frozen=True)
class GraphCounts:
    """The fixed counts of the export graph (see :func:`~edgeseg.tasks.instance.static_graph.build_static`)."""

    pre_nms_top_n: int = 200
    proposals: int = 100
    candidates: int = 300
    detections: int = 20
    nms_iterations: int = 12

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def to_input(img: np.ndarray) -> np.ndarray:
    """An HWC uint8 image as the graph's NCHW float input in [0, 1]."""
    return (np.asarray(img, np.float32).transpose(2, 0, 1)[None] / 255.0).astype(np.float32)


def check_precision(target: str, precision: str | None) -> str:
    if target not in PRECISIONS:
        raise UsageError(f"Mask R-CNN exports to {', '.join(PRECISIONS)}; '{target}' is not one of them")
    precision = precision or PRECISIONS[target][0]
    if precision not in PRECISIONS[target]:
        raise UsageError(f"Mask R-CNN on '{target}' has precisions {', '.join(PRECISIONS[target])}, not "
                         f"'{precision}'")
    return precision


def load_runner(target: str, path: Path | bytes, threads: int = 2) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The target's own runner of an exported graph (by its output names): NCHW [0, 1] in, ``{name: array}`` out.
    ``path`` may be a TFLite file's bytes (a mixed-precision search's candidate)."""
    if target not in PRECISIONS:
        raise UsageError(f"Mask R-CNN exports to {', '.join(PRECISIONS)}; '{target}' is not one of them")
    return TARGETS[target].load(path if isinstance(path, (bytes, bytearray)) else Path(path), threads,
                                outputs=OUTPUTS)


def detections(out: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Valid detections of one image with masks pasted into the image, as torchvision returns them."""
    d = valid_detections({k: np.asarray(v)[0] for k, v in out.items()})
    d["masks"] = paste_masks(d["masks"], d["boxes"], size, size)
    return d


def reference_detections(model, images: Sequence[np.ndarray], counts: GraphCounts) -> list[dict[str, np.ndarray]]:
    """torchvision's eager inference with the export graph's counts (what the graph must reproduce)."""
    from edgeseg.tasks.instance.train import predict

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
    exps = [detections(runner(to_input(img)), size) for img in images]
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
            out = {k: v.numpy() for k, v in zip(OUTPUTS, graph(torch.from_numpy(to_input(img))))}
        d = detections(out, size)
        outs.append(d)
        same += int(len(d["boxes"]) == len(ref["boxes"]) and bool((d["labels"] == ref["labels"]).all()))
    p = compare_instances(refs, outs, "pytorch", "fp32", instance_thresholds("fp32"), score_threshold=0.0)
    return {"images": len(images), "identical_detection_lists": same, "detections": p.reference_detections,
            "matched": p.matched, "missed": p.missed, "extra": p.extra, "mask_iou_mean": p.mask_iou_mean,
            "box_iou_min": p.box_iou_min, "max_score_diff": p.max_score_diff}
