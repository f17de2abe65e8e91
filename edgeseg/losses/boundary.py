"""Boundary-based losses: boundary loss (Kervadec et al.) and the Hausdorff-distance loss (Karimi &
Salcudean, distance-transform variant). Both read the ground truth's signed distance maps that the data
pipeline computes once per sample (``edgeseg.losses.distance``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage

from edgeseg.data.base import IGNORE_INDEX
from edgeseg.core.errors import UsageError
from edgeseg.losses import LOSSES


def _require(dist, name: str) -> torch.Tensor:
    if dist is None:
        raise UsageError(f"loss '{name}' needs distance maps from the data pipeline (none were given)")
    return dist


class BoundaryLoss(nn.Module):
    """Kervadec et al. (2019): mean over pixels of ``φ_G · s_θ`` for the foreground classes, where φ_G is
    the signed distance map (negative inside) and s_θ the softmax probability. Its minimum is negative;
    pair it with a region loss (e.g. ``"dice + 0.01*boundary"`` or a start epoch ``boundary@5``)."""

    needs_distance_maps = True

    def __init__(self, num_classes: int, background: bool = False) -> None:
        super().__init__()
        self.first = 0 if background else 1

    def forward(self, logits, target, dist=None):
        dist = _require(dist, "boundary")
        p = F.softmax(logits.float(), dim=1)
        valid = (target != IGNORE_INDEX).unsqueeze(1).to(p.dtype)
        prod = p[:, self.first:] * dist[:, self.first:] * valid
        return prod.sum() / (valid.sum() * (p.shape[1] - self.first)).clamp(min=1)


class HausdorffDT(nn.Module):
    """Karimi & Salcudean (2019), distance-transform variant: mean of ``(p - g)² · (d_G^α + d_P^α)`` over
    foreground classes, with d_G the ground truth's unsigned distance to its boundary (from the pipeline)
    and d_P that of the current prediction (``p > 0.5``), recomputed each step on the CPU without gradient."""

    needs_distance_maps = True

    def __init__(self, num_classes: int, alpha: float = 2.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, logits, target, dist=None):
        dist = _require(dist, "hausdorff")
        p = F.softmax(logits.float(), dim=1)[:, 1:]
        t = torch.where(target == IGNORE_INDEX, torch.zeros_like(target), target)
        g = F.one_hot(t, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(p.dtype)
        valid = (target != IGNORE_INDEX).unsqueeze(1).to(p.dtype)
        with torch.no_grad():
            pred = ((p > 0.5) & (valid > 0)).cpu().numpy()  # ignored pixels shape no distance
            dp = np.zeros(pred.shape, np.float32)
            for idx in np.ndindex(pred.shape[:2]):
                m = pred[idx]
                if m.any():
                    dp[idx] = ndimage.distance_transform_edt(~m) + ndimage.distance_transform_edt(m)
            dp_t = torch.from_numpy(dp).to(p.device)
        dg = dist[:, 1:].abs()
        w = dg.pow(self.alpha) + dp_t.pow(self.alpha)
        return ((p - g) ** 2 * w * valid).sum() / (valid.sum() * p.shape[1]).clamp(min=1)


LOSSES.register("boundary")(BoundaryLoss)
LOSSES.register("hausdorff")(HausdorffDT)
