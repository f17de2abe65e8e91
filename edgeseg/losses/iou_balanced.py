"""IoU-balanced classification loss (Wu et al., 2019, "IoU-balanced Loss Functions for Single-stage
Object Detection"), for the box classifier of Mask R-CNN (the instance-segmentation issue uses it).

Positive samples (label > 0) are weighted by ``IoU^eta`` with their matched ground-truth box, normalized
so the positives' total weight equals their count: the loss keeps its scale, only its distribution over
positives changes (well-localized boxes count more). Negatives keep weight 1. Weights carry no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeseg.core.errors import UsageError


def iou_balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ious: torch.Tensor,
                               eta: float = 1.5) -> torch.Tensor:
    """``logits [R, K]``, ``labels [R]`` (0 = background), ``ious [R]`` with the matched boxes."""
    if eta < 0:
        raise UsageError(f"iou_balanced_cross_entropy: eta must be >= 0, got {eta}")
    ce = F.cross_entropy(logits, labels, reduction="none")
    with torch.no_grad():
        w = torch.ones_like(ce)
        pos = labels > 0
        if pos.any():
            wp = ious[pos].clamp(min=0, max=1).to(ce.dtype) ** eta
            w[pos] = wp * pos.sum() / wp.sum().clamp(min=1e-12)
    return (w * ce).sum() / max(ce.numel(), 1)
