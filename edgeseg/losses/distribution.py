"""Distribution-based losses: cross-entropy, focal, TopK, distance-penalized CE."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.data.base import IGNORE_INDEX
from edgeseg.core.errors import UsageError
from edgeseg.losses import LOSSES, check_class_weights


class CrossEntropy(nn.Module):
    """Mean cross-entropy over valid pixels, optionally class-weighted (PyTorch's weighted mean)."""

    def __init__(self, num_classes: int, weight=None) -> None:
        super().__init__()
        w = check_class_weights(weight, num_classes, "ce")
        self.register_buffer("weight", w if w is not None else torch.ones(num_classes))

    def forward(self, logits, target, dist=None):
        return F.cross_entropy(logits, target, weight=self.weight.to(logits.dtype), ignore_index=IGNORE_INDEX)


class Focal(nn.Module):
    """Focal loss (Lin et al.): ``-alpha_t (1 - p_t)^gamma log p_t``, mean over valid pixels."""

    def __init__(self, num_classes: int, gamma: float = 2.0, alpha=None) -> None:
        super().__init__()
        if gamma < 0:
            raise UsageError(f"loss 'focal': gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        a = check_class_weights(alpha, num_classes, "focal")
        self.register_buffer("alpha", a if a is not None else torch.ones(num_classes))

    def forward(self, logits, target, dist=None):
        valid = target != IGNORE_INDEX
        t = torch.where(valid, target, torch.zeros_like(target))
        logp = F.log_softmax(logits.float(), dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
        pt = logp.exp()
        loss = -self.alpha[t] * (1 - pt).pow(self.gamma) * logp
        return loss[valid].sum() / valid.sum().clamp(min=1)


class TopK(nn.Module):
    """TopK cross-entropy: mean CE over the ``k`` % hardest valid pixels of the batch."""

    def __init__(self, num_classes: int, k: float = 10.0, weight=None) -> None:
        super().__init__()
        if not 0 < k <= 100:
            raise UsageError(f"loss 'topk': k must be in (0, 100], got {k}")
        self.k = float(k)
        w = check_class_weights(weight, num_classes, "topk")
        self.register_buffer("weight", w if w is not None else torch.ones(num_classes))

    def forward(self, logits, target, dist=None):
        ce = F.cross_entropy(logits, target, weight=self.weight.to(logits.dtype), ignore_index=IGNORE_INDEX,
                             reduction="none")
        vals = ce[target != IGNORE_INDEX]
        n = max(1, int(round(vals.numel() * self.k / 100)))
        return vals.topk(n, sorted=False).values.mean() if vals.numel() else ce.sum() * 0


class DistancePenalizedCE(nn.Module):
    """Distance-penalized CE (Calivá et al., 2019): CE weighted per pixel by ``1 + Φ``, where Φ is the
    inverted, per-image normalized distance to the nearest ground-truth boundary (1 on the boundary,
    0 at the farthest pixel), so errors near boundaries cost up to twice as much."""

    needs_distance_maps = True

    def __init__(self, num_classes: int) -> None:
        super().__init__()

    def forward(self, logits, target, dist=None):
        if dist is None:
            raise UsageError("loss 'dpce' needs distance maps from the data pipeline (none were given)")
        d = dist.abs().amin(dim=1)  # distance to the nearest boundary of any class
        phi = 1 - d / d.flatten(1).amax(1).clamp(min=1e-6).view(-1, 1, 1)
        ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
        valid = target != IGNORE_INDEX
        return (ce * (1 + phi))[valid].sum() / valid.sum().clamp(min=1)


LOSSES.register("ce")(CrossEntropy)
LOSSES.register("focal")(Focal)
LOSSES.register("topk")(TopK)
LOSSES.register("dpce")(DistancePenalizedCE)
