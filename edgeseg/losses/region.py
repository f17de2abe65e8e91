"""Region-based losses: soft Dice, soft Jaccard (IoU), sensitivity-specificity, Lovász-Softmax.

Soft losses compare softmax probabilities ``p`` with one-hot targets ``g`` over the valid pixels of the
whole batch, per class, then average over classes (optionally weighted).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.data.base import IGNORE_INDEX
from edgeseg.errors import UsageError
from edgeseg.losses import LOSSES, check_class_weights


def soft_counts(logits: torch.Tensor, target: torch.Tensor, squared: bool = False):
    """Per-class ``Σ p·g``, ``Σ p`` (or ``Σ p²``) and ``Σ g`` over valid pixels, without one-hot tensors.

    ``Σ p·g`` is the probability of the true class summed per class (gather + bincount), which costs one
    pass instead of materializing a ``[N, C, H, W]`` one-hot; this keeps Dice/Jaccard near CE's cost.
    """
    c = logits.shape[1]
    p = F.softmax(logits.float(), dim=1)
    valid = target != IGNORE_INDEX
    t = torch.where(valid, target, torch.zeros_like(target))
    pt = p.gather(1, t.unsqueeze(1)).squeeze(1)
    inter = torch.zeros(c, device=p.device, dtype=p.dtype).index_add_(0, t[valid], pt[valid])
    g_sum = torch.bincount(t[valid], minlength=c).to(p.dtype)
    pv = p * valid.unsqueeze(1)
    p_sum = (pv * p).sum((0, 2, 3)) if squared else pv.sum((0, 2, 3))
    return inter, p_sum, g_sum


def _class_mean(per_class: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return per_class.mean()
    w = weight.to(per_class)
    return (per_class * w).sum() / w.sum().clamp(min=1e-12)


class Dice(nn.Module):
    """Soft Dice loss ``1 - (2 Σpg + s) / (Σp^e + Σg^e + s)`` per class (e = 2 when ``squared``)."""

    def __init__(self, num_classes: int, smooth: float = 1.0, squared: bool = False, weight=None) -> None:
        super().__init__()
        self.smooth, self.squared = float(smooth), bool(squared)
        self.weight = check_class_weights(weight, num_classes, "dice")

    def forward(self, logits, target, dist=None):
        inter, p_sum, g_sum = soft_counts(logits, target, self.squared)  # g is 0/1, so Σg² = Σg
        return _class_mean(1 - (2 * inter + self.smooth) / (p_sum + g_sum + self.smooth), self.weight)


class Jaccard(nn.Module):
    """Soft Jaccard (IoU) loss ``1 - (Σpg + s) / (Σp + Σg - Σpg + s)`` per class."""

    def __init__(self, num_classes: int, smooth: float = 1.0, weight=None) -> None:
        super().__init__()
        self.smooth = float(smooth)
        self.weight = check_class_weights(weight, num_classes, "jaccard")

    def forward(self, logits, target, dist=None):
        inter, p_sum, g_sum = soft_counts(logits, target)
        return _class_mean(1 - (inter + self.smooth) / (p_sum + g_sum - inter + self.smooth), self.weight)


class SensitivitySpecificity(nn.Module):
    """Brosch et al. (2015): ``r Σ(g-p)²g / Σg + (1-r) Σ(g-p)²(1-g) / Σ(1-g)`` per class, averaged."""

    def __init__(self, num_classes: int, r: float = 0.05, smooth: float = 1e-5) -> None:
        super().__init__()
        if not 0 <= r <= 1:
            raise UsageError(f"loss 'sensitivity_specificity': r must be in [0, 1], got {r}")
        self.r, self.smooth = float(r), float(smooth)

    def forward(self, logits, target, dist=None):
        # With g in {0,1}: Σ(g-p)²g = Σ_g (1 - 2p + p²) and Σ(g-p)²(1-g) = Σ p² - Σ_g p², per class,
        # computed from per-pixel gathers instead of a one-hot tensor.
        c = logits.shape[1]
        p = F.softmax(logits.float(), dim=1)
        valid = target != IGNORE_INDEX
        t = torch.where(valid, target, torch.zeros_like(target))
        pt = p.gather(1, t.unsqueeze(1)).squeeze(1)[valid]
        tv = t[valid]
        zeros = torch.zeros(c, device=p.device, dtype=p.dtype)
        g_sum = torch.bincount(tv, minlength=c).to(p.dtype)
        fg_err = zeros.index_add(0, tv, (1 - pt) ** 2)
        p2_all = (p * p * valid.unsqueeze(1)).sum((0, 2, 3))
        bg_err = p2_all - zeros.index_add(0, tv, pt * pt)
        n_valid = valid.sum().to(p.dtype)
        sens = fg_err / (g_sum + self.smooth)
        spec = bg_err / (n_valid - g_sum + self.smooth)
        return (self.r * sens + (1 - self.r) * spec).mean()


def _lovasz_flat(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """probs [P, C], labels [P]: mean over present classes of the Lovász hinge on |g - p|.

    All classes are sorted in one batched ``sort`` and the Lovász gradients are computed with cumulative
    sums along the sorted axis (Berman et al.'s Algorithm 1, vectorized over classes).
    """
    if probs.shape[0] == 0:
        return probs.sum() * 0
    fg = F.one_hot(labels, probs.shape[1]).t().to(probs.dtype)  # [C, P]
    present = fg.sum(1) > 0
    if not present.any():
        return probs.sum() * 0
    fg, pr = fg[present], probs.t()[present]
    errors = (fg - pr).abs()
    errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
    fg_sorted = fg.gather(1, perm)
    gts = fg_sorted.sum(1, keepdim=True)
    intersection = gts - fg_sorted.cumsum(1)
    union = gts + (1 - fg_sorted).cumsum(1)
    jaccard = 1.0 - intersection / union
    grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    return (errors_sorted * grad).sum(1).mean()


class LovaszSoftmax(nn.Module):
    """Lovász-Softmax (Berman et al., 2018), over present classes, per batch or per image."""

    def __init__(self, num_classes: int, per_image: bool = False) -> None:
        super().__init__()
        self.per_image = bool(per_image)

    def forward(self, logits, target, dist=None):
        probs = F.softmax(logits.float(), dim=1)
        n, c = probs.shape[:2]
        flat_p = probs.permute(0, 2, 3, 1).reshape(n, -1, c)
        flat_t = target.reshape(n, -1)
        if self.per_image:
            return torch.stack([_lovasz_flat(p[t != IGNORE_INDEX], t[t != IGNORE_INDEX])
                                for p, t in zip(flat_p, flat_t)]).mean()
        p, t = flat_p.reshape(-1, c), flat_t.reshape(-1)
        keep = t != IGNORE_INDEX
        return _lovasz_flat(p[keep], t[keep])


LOSSES.register("dice")(Dice)
LOSSES.register("jaccard")(Jaccard)
LOSSES.register("sensitivity_specificity")(SensitivitySpecificity)
LOSSES.register("lovasz")(LovaszSoftmax)
