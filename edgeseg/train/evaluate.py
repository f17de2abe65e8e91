"""Dataset evaluation and BatchNorm re-estimation."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from edgeseg.core.metrics import confusion, iou_per_class, mean_iou, pixel_accuracy


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device,
             reduce: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """mIoU, per-class IoU, pixel accuracy and the number of pixels counted of ``model`` against the loader's
    masks; ``reduce`` sums the confusion matrix over processes when each evaluates a shard."""
    model.eval()
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for x, y, *_ in loader:
        pred = model(x.to(device)).argmax(1).cpu().numpy()
        cm += confusion(y.numpy(), pred, num_classes)
    if reduce is not None:
        cm = reduce(cm)
    return {"miou": mean_iou(cm), "pixel_accuracy": pixel_accuracy(cm),
            "iou_per_class": [None if np.isnan(v) else float(v) for v in iou_per_class(cm)], "pixels": int(cm.sum())}


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable, device: torch.device, batches: int) -> int:
    """Re-estimate BatchNorm running statistics as a plain average over ``batches`` training batches.

    Short runs with a low BN momentum (torchvision's MobileNetV3 uses 0.01) leave running statistics
    far from the trained weights' real activations, and eval-mode masks collapse to background.
    Returns the number of batches used (0 when the model has no BatchNorm).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return 0
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    used = 0
    for x, *_ in loader:
        model(x.to(device))
        used += 1
        if used >= batches:
            break
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()
    return used
