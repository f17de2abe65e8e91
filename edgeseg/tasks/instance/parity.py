"""Instance parity: an exported Mask R-CNN's detections against the PyTorch reference, detection by detection.

Each reference detection is matched to the exported detection of the same class with the highest box IoU (at
least ``match_iou``; greedy, reference detections in score order). Reported: matched-instance mask IoU (binary
masks at 0.5 in the image) and box IoU (mean and worst), the largest score difference, missed detections
(reference, unmatched) and extra ones (exported, unmatched) among those scoring at least ``score_threshold`` —
detections that straddle the threshold are matched against every detection of the other side, so a score that
moves from 0.31 to 0.29 counts as a score difference, not as a miss — and the mask/box AP of both against the
ground truth when it is given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgeseg.core.mixed_precision import Judge
from edgeseg.tasks.semantic.parity import FAILED, NOT_VERIFIED, PASSED

DEFAULT_INSTANCE_THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"min_mask_iou": 0.97, "min_box_iou": 0.97, "max_unmatched": 0.02, "max_ap_drop": 0.01},
    "fp16": {"min_mask_iou": 0.95, "min_box_iou": 0.95, "max_unmatched": 0.05, "max_ap_drop": 0.02},
    "int8": {"min_mask_iou": 0.85, "min_box_iou": 0.85, "max_unmatched": 0.10, "max_ap_drop": 0.05},
}


@dataclass
class InstanceParity:
    """Figures of one exported Mask R-CNN against its reference on the same images."""

    target: str
    precision: str
    status: str
    runtime: str = ""
    images: int = 0
    reference_detections: int = 0
    matched: int = 0
    missed: int = 0
    extra: int = 0
    mask_iou_mean: float | None = None
    mask_iou_min: float | None = None
    box_iou_mean: float | None = None
    box_iou_min: float | None = None
    max_score_diff: float | None = None
    reference_ap: dict[str, float] = field(default_factory=dict)
    exported_ap: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def instance_thresholds(precision: str, **overrides: float | None) -> dict[str, float]:
    t = dict(DEFAULT_INSTANCE_THRESHOLDS.get(precision, DEFAULT_INSTANCE_THRESHOLDS["int8"]))
    t.update({k: float(v) for k, v in overrides.items() if v is not None})
    return t


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of x1y1x2y2 boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) >= 0.5, np.asarray(b) >= 0.5
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def match(ref: dict[str, np.ndarray], exp: dict[str, np.ndarray], match_iou: float = 0.5) -> list[tuple[int, int]]:
    """Greedy same-class matching by box IoU, reference detections in score order: (ref index, exported index)."""
    ious = box_iou(ref["boxes"], exp["boxes"])
    taken: set[int] = set()
    pairs = []
    for i in np.argsort(-np.asarray(ref["scores"]), kind="stable"):
        best, best_iou = -1, match_iou
        for j in range(ious.shape[1]):
            if j in taken or int(exp["labels"][j]) != int(ref["labels"][i]):
                continue
            if ious[i, j] >= best_iou:
                best, best_iou = j, ious[i, j]
        if best >= 0:
            taken.add(best)
            pairs.append((int(i), best))
    return pairs


def compare_instances(references: Sequence[dict[str, np.ndarray]], exported: Sequence[dict[str, np.ndarray]],
                      target: str, precision: str, thresholds: dict[str, float], runtime: str = "",
                      targets: Sequence[dict[str, np.ndarray]] | None = None, num_classes: int | None = None,
                      score_threshold: float = 0.3, match_iou: float = 0.5) -> InstanceParity:
    """Instance parity of per-image detections (``boxes``, ``scores``, ``labels``, image ``masks`` [n, 1, H, W] or
    [n, H, W] probabilities). ``targets`` (ground truth) adds the COCO mask/box AP of both."""
    from edgeseg.tasks.instance.evaluate import coco_ap

    res = InstanceParity(target, precision, PASSED, runtime=runtime, images=len(references),
                         thresholds=dict(thresholds))
    mious, bious, sdiffs = [], [], []
    for ref, exp in zip(references, exported):
        rm, em = (np.asarray(d["masks"]).reshape(len(d["scores"]), *np.asarray(d["masks"]).shape[-2:])
                  for d in (ref, exp))
        pairs = match(ref, exp, match_iou)
        ious = box_iou(ref["boxes"], exp["boxes"])
        seen_r, seen_e = {i for i, _ in pairs}, {j for _, j in pairs}
        res.reference_detections += int((np.asarray(ref["scores"]) >= score_threshold).sum())
        for i, j in pairs:
            if max(ref["scores"][i], exp["scores"][j]) < score_threshold:
                continue
            res.matched += 1
            mious.append(mask_iou(rm[i], em[j]))
            bious.append(float(ious[i, j]))
            sdiffs.append(abs(float(ref["scores"][i]) - float(exp["scores"][j])))
        res.missed += sum(1 for i, s in enumerate(ref["scores"]) if s >= score_threshold and i not in seen_r)
        res.extra += sum(1 for j, s in enumerate(exp["scores"]) if s >= score_threshold and j not in seen_e)
    if mious:
        res.mask_iou_mean, res.mask_iou_min = float(np.mean(mious)), float(np.min(mious))
        res.box_iou_mean, res.box_iou_min = float(np.mean(bious)), float(np.min(bious))
        res.max_score_diff = float(np.max(sdiffs))
    if targets is not None and num_classes:
        res.reference_ap = {k: v["AP"] for k, v in coco_ap(targets, references, num_classes).items()}
        res.exported_ap = {k: v["AP"] for k, v in coco_ap(targets, exported, num_classes).items()}
    t = thresholds
    denom = max(1, res.reference_detections)
    if res.mask_iou_mean is not None and res.mask_iou_mean < t["min_mask_iou"]:
        res.failures.append(f"matched mask IoU {res.mask_iou_mean:.4f} < {t['min_mask_iou']}")
    if res.box_iou_mean is not None and res.box_iou_mean < t["min_box_iou"]:
        res.failures.append(f"matched box IoU {res.box_iou_mean:.4f} < {t['min_box_iou']}")
    if (res.missed + res.extra) / denom > t["max_unmatched"]:
        res.failures.append(f"{res.missed} missed + {res.extra} extra of {res.reference_detections} reference "
                            f"detections > {t['max_unmatched']:.0%}")
    if res.reference_ap and res.reference_ap["mask"] - res.exported_ap["mask"] > t["max_ap_drop"]:
        res.failures.append(f"mask AP {res.exported_ap['mask']:.4f} vs reference {res.reference_ap['mask']:.4f}: "
                            f"drop > {t['max_ap_drop']}")
    if res.failures:
        res.status = FAILED
    elif res.reference_detections == 0:  # nothing compared is not a pass
        res.status = NOT_VERIFIED
        res.reason = (f"the reference detects nothing scoring >= {score_threshold} on these {res.images} images: "
                      f"nothing to compare (train longer, or lower the score threshold)")
    return res


def _figures(p: InstanceParity) -> dict[str, Any]:
    return {"passed": bool(p.passed), "mask_iou_mean": p.mask_iou_mean, "box_iou_mean": p.box_iou_mean,
            "matched": p.matched, "missed": p.missed, "extra": p.extra, "failures": list(p.failures)}


def _show(p: InstanceParity) -> str:
    f = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    return (f"mask IoU {f(p.mask_iou_mean)}, box IoU {f(p.box_iou_mean)}, {p.missed} missed / {p.extra} extra"
            f"{'  PASS' if p.passed else ''}")


#: what the mixed-precision search asks of instance parity: closer to passing is fewer gates failed, then fewer
#: missed + extra detections, then the matched mask and box IoU
JUDGE = Judge(score=lambda p: (bool(p.passed), -len(p.failures), -(p.missed + p.extra), p.mask_iou_mean or 0.0,
                               p.box_iou_mean or 0.0), figures=_figures, show=_show)
