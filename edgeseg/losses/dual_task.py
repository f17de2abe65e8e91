"""Gated-SCNN's training signal (Takikawa et al., ICCV 2019) as loss-spec terms.

* ``edge_bce``: class-balanced binary cross-entropy between the model's ``edge`` output and the
  ground-truth semantic boundaries (positives weighted by the negative fraction and vice versa).
* ``edge_attention``: the dual-task regularizer's edge-attention part: cross-entropy of the
  segmentation restricted to pixels whose predicted edge probability exceeds ``threshold`` (0.8).
* ``dual_task``: the dual-task regularizer's boundary-consistency part: L1 between the gradient
  magnitude of the Gumbel-softmax segmentation (τ = 0.5) and that of the one-hot ground truth, both
  smoothed by the official code's triangle filter (radius 4) and normalized by their maximum, averaged
  half over the predicted and half over the ground-truth boundary pixels. It reads only the logits, so
  any model can use it.

``edge_bce`` and ``edge_attention`` read the model's ``edge`` output (only ``gscnn`` has one); models
that produce auxiliary outputs name their default terms in ``loss_terms`` and the trainer adds them
when the user's ``--loss`` names none of them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.data.base import IGNORE_INDEX
from edgeseg.core.errors import UsageError
from edgeseg.losses import LOSSES


def boundaries(target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth boundary pixels (a 3×3 neighbour has another class) and the valid-pixel mask."""
    valid = (target != ignore_index).float()
    t = target.float().unsqueeze(1)
    t = torch.where(t == ignore_index, torch.zeros_like(t), t)
    edge = (F.max_pool2d(t, 3, 1, 1) != -F.max_pool2d(-t, 3, 1, 1)).float()[:, 0]
    return edge, valid


def _edge_logits(outputs, name: str) -> torch.Tensor:
    if not isinstance(outputs, dict) or "edge" not in outputs:
        raise UsageError(f"loss '{name}' needs the model's 'edge' output, which only gscnn produces in "
                         f"training; use it with --model gscnn or drop it from --loss")
    return outputs["edge"][:, 0]


class EdgeBCE(nn.Module):
    """Class-balanced BCE of the edge logits against the ground-truth boundaries, over valid pixels."""

    reads_outputs = ("edge",)

    def __init__(self, num_classes: int) -> None:
        super().__init__()

    def forward(self, outputs, target, dist=None):
        logit = _edge_logits(outputs, "edge_bce")
        edge_gt, valid = boundaries(target)
        pos = (edge_gt * valid).sum()
        neg = ((1 - edge_gt) * valid).sum()
        total = (pos + neg).clamp(min=1)
        weight = torch.where(edge_gt > 0, neg / total, pos / total) * valid
        return (F.binary_cross_entropy_with_logits(logit.float(), edge_gt, weight=weight, reduction="sum")
                / valid.sum().clamp(min=1))


class EdgeAttention(nn.Module):
    """Cross-entropy of the segmentation on the pixels the edge branch calls boundary (p > threshold)."""

    reads_outputs = ("edge",)

    def __init__(self, num_classes: int, threshold: float = 0.8) -> None:
        super().__init__()
        if not 0 < threshold < 1:
            raise UsageError(f"loss 'edge_attention': threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold)

    def forward(self, outputs, target, dist=None):
        logit = _edge_logits(outputs, "edge_attention")
        seg = outputs["out"]
        focus = torch.where(torch.sigmoid(logit.detach()) > self.threshold, target,
                            torch.full_like(target, IGNORE_INDEX))
        if not (focus != IGNORE_INDEX).any():
            return seg.sum() * 0.0
        return F.cross_entropy(seg.float(), focus, ignore_index=IGNORE_INDEX)


def _triangle_smooth(x: torch.Tensor, r: int = 4) -> torch.Tensor:
    """Triangle filter of radius ``r`` with reflect padding (Dollár's convTri, as GSCNN uses).

    The triangle ``[1, 2, .., r+1, .., 2, 1] / (r+1)²`` is a box of width ``r+1`` applied twice, so it
    runs as four 1-D average pools, far cheaper on a CPU than a grouped convolution.
    """
    x = F.pad(x, (r, r, r, r), mode="reflect")
    k = r + 1
    for size in ((1, k), (1, k), (k, 1), (k, 1)):
        x = F.avg_pool2d(x, size, stride=1)
    return x


def _gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Smoothed central-difference gradient magnitude per channel, normalized by its maximum."""
    s = _triangle_smooth(x)
    p = F.pad(s, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    gy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    mag = torch.sqrt(gx * gx + gy * gy + 1e-12)
    return mag / mag.detach().amax().clamp(min=1e-12)


class DualTask(nn.Module):
    """Boundary consistency between the segmentation's and the ground truth's class boundaries."""

    def __init__(self, num_classes: int, tau: float = 0.5, gumbel: bool = True, threshold: float = 1e-3) -> None:
        super().__init__()
        if tau <= 0:
            raise UsageError(f"loss 'dual_task': tau must be > 0, got {tau}")
        self.tau, self.gumbel, self.threshold = float(tau), bool(gumbel), float(threshold)

    def forward(self, logits, target, dist=None):
        n, c, h, w = logits.shape
        if min(h, w) <= 4:
            raise UsageError(f"loss 'dual_task': its radius-4 smoothing needs images larger than 4x4, got {h}x{w}")
        valid = (target != IGNORE_INDEX).unsqueeze(1).to(logits.dtype)
        t = torch.where(target == IGNORE_INDEX, torch.zeros_like(target), target)
        if self.gumbel and self.training:
            seg = F.gumbel_softmax(logits.float(), tau=self.tau, dim=1)
        else:
            seg = F.softmax(logits.float() / self.tau, dim=1)
        # ignored pixels are zero in both maps, so they neither count nor receive gradient
        g = _gradient_magnitude(seg * valid)
        with torch.no_grad():
            g_hat = _gradient_magnitude(F.one_hot(t, c).permute(0, 3, 1, 2).float() * valid)
        diff = (g - g_hat).abs()
        pred_mask = (g.detach() >= self.threshold).float()
        gt_mask = (g_hat >= self.threshold).float()
        return (0.5 * (diff * pred_mask).sum() / pred_mask.sum().clamp(min=1)
                + 0.5 * (diff * gt_mask).sum() / gt_mask.sum().clamp(min=1))


LOSSES.register("edge_bce")(EdgeBCE)
LOSSES.register("edge_attention")(EdgeAttention)
LOSSES.register("dual_task")(DualTask)
