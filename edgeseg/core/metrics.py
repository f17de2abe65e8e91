"""Confusion-matrix segmentation metrics."""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255  # label value that no metric or loss counts (padding, 'void' classes)


def confusion(target: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = pixels of true class ``i`` predicted as ``j``; ignored pixels skipped."""
    target = np.asarray(target).ravel()
    pred = np.asarray(pred).ravel()
    keep = target != IGNORE_INDEX
    idx = target[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU of each class; NaN for a class absent from both target and prediction."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(cm: np.ndarray, skip: np.ndarray | None = None) -> float:
    """Mean IoU over the classes present in target or prediction (and not marked in the boolean ``skip``)."""
    ious = iou_per_class(cm)
    if skip is not None:
        ious[skip] = np.nan
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")
