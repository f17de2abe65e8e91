"""Region-based losses: soft Dice, soft Jaccard (IoU), sensitivity-specificity, Lovász-Softmax.

Soft losses compare softmax probabilities ``p`` with one-hot targets ``g`` over the valid pixels of the
whole batch, per class, then average over classes (optionally weighted).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.data.base import IGNORE_INDEX
from edgeseg.core.errors import UsageError
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
        pv = p if bool(valid.all()) else p * valid.unsqueeze(1)
        p2_all = pv.square().sum((0, 2, 3))
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


class _LovaszBinned(torch.autograd.Function):
    """Lovász-Softmax with the errors bucket-sorted into ``bins`` levels instead of sorted.

    Sorting ``C x P`` errors costs ~10x a cross-entropy at 512² x 8 x 19 on a CPU. A counting sort does
    the same in linear time: one ``bincount`` of (image, class, error bin, fg/bg) gives, per class, how
    many foreground and background pixels have a larger error, hence the Jaccard loss before and after
    every bin. Pixels keep their exact order between bins; within a bin the increment of the Jaccard loss
    is split between its fg and bg pixels by the partial derivatives of the Jaccard loss at the bin's
    midpoint. Every weight is >= 0 and each bin's weights sum to the exact increment, so the value is
    within ``1 / bins`` of the exactly sorted one (tested) and exact for hard (0/1) errors. The weights
    are the (sub)gradient with respect to the errors, so backward is one table lookup per pixel.
    """

    @staticmethod
    def forward(ctx, probs, target, bins: int, per_image: bool):
        n, c = probs.shape[:2]
        dev = probs.device
        with torch.no_grad():
            valid = target != IGNORE_INDEX
            t = torch.where(valid, target, torch.zeros_like(target)).unsqueeze(1)
            # error = p for background pixels of a class, 1 - p at each pixel's own class
            errors = probs.clone()
            errors.scatter_(1, t, 1 - probs.gather(1, t))
            groups = n if per_image else 1
            image = torch.arange(n, device=dev) if per_image else torch.zeros(n, device=dev, dtype=torch.long)
            base = (image.view(n, 1) * c + torch.arange(c, device=dev).view(1, c)) * (bins * 2)
            dump = groups * c * bins * 2  # ignored pixels land here and get no weight
            # key = 2 * error bin + is-foreground + 2 * bins * (group * C + class); an error of exactly 1
            # falls into the top bin thanks to the factor just below ``bins``
            key = (errors * (bins * (1 - 1e-6))).floor_().mul_(2).add_(base.view(n, c, 1, 1).to(probs.dtype))
            key = key.to(torch.int32)
            key.scatter_add_(1, t, torch.ones_like(t, dtype=torch.int32))
            if not bool(valid.all()):
                key.masked_fill_(~valid.unsqueeze(1), dump)
            key = key.reshape(-1)
            counts = torch.bincount(key, minlength=dump + 1)[:dump].view(groups, c, bins, 2).double()
            err_sum = torch.bincount(key, weights=errors.reshape(-1).float(), minlength=dump + 1)[:dump]
            err_sum = err_sum.view(groups, c, bins, 2).double()
            f, b = counts[..., 1], counts[..., 0]
            gts = f.sum(-1, keepdim=True)
            present = gts[..., 0] > 0  # [groups, C]
            # pixels with a larger error than each bin (higher bins come first in the sorted order)
            f0 = f.flip(-1).cumsum(-1).flip(-1) - f
            b0 = b.flip(-1).cumsum(-1).flip(-1) - b
            g = gts.clamp(min=1)
            delta = (1 - (g - f0 - f) / (g + b0 + b)) - (1 - (g - f0) / (g + b0))
            fm, bm = f0 + f / 2, b0 + b / 2
            d_fg, d_bg = 1 / (g + bm), (g - fm) / (g + bm) ** 2
            total = f * d_fg + b * d_bg
            scale = torch.where(total > 0, delta / total.clamp(min=1e-300), torch.zeros_like(total))
            weights = torch.stack([scale * d_bg, scale * d_fg], dim=-1)  # [groups, C, bins, 2]
            # mean over present classes, then over images
            n_present = present.sum(-1, keepdim=True).clamp(min=1)
            factor = present / n_present / groups
            weights = weights * factor[..., None, None]
            loss = (weights * err_sum).sum()
            sign = torch.tensor([1.0, -1.0], device=dev, dtype=weights.dtype)  # d error / d p: bg +1, fg -1
            table = torch.cat([(weights * sign).reshape(-1), weights.new_zeros(1)]).to(probs.dtype)
        ctx.save_for_backward(table, key)
        ctx.shape = probs.shape
        return loss.to(probs.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        table, key = ctx.saved_tensors
        grad = (table * grad_out).index_select(0, key).view(ctx.shape)
        return grad, None, None, None


class LovaszSoftmax(nn.Module):
    """Lovász-Softmax (Berman et al., 2018), over present classes, per batch or per image.

    ``bins=0`` sorts the errors as the paper's Algorithm 1 does; ``bins=N`` (default 4096) bucket-sorts
    them in linear time, within ``1/N`` of the sorted value (see ``_LovaszBinned``).
    """

    def __init__(self, num_classes: int, per_image: bool = False, bins: int = 4096) -> None:
        super().__init__()
        if int(bins) != bins or bins < 0 or bins == 1:
            raise UsageError(f"loss 'lovasz': bins must be 0 (exact sort) or an integer >= 2, got {bins}")
        self.per_image = bool(per_image)
        self.bins = int(bins)

    def forward(self, logits, target, dist=None):
        probs = F.softmax(logits.float(), dim=1)
        if self.bins:
            return _LovaszBinned.apply(probs, target, self.bins, self.per_image)
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
