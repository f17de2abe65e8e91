"""Signed distance maps of ground-truth masks, computed once per sample in the data pipeline."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from edgeseg.data.base import IGNORE_INDEX


def signed_distance_maps(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, H, W]`` float32: for each class, the Euclidean distance to its boundary, negative inside the
    class and positive outside (Kervadec et al.); all zeros for a class absent from the mask."""
    out = np.zeros((num_classes, *mask.shape), np.float32)
    for c in range(num_classes):
        pos = mask == c
        if not pos.any():
            continue
        neg = ~pos
        # distance of outside pixels to the class, minus distance of inside pixels to the outside;
        # boundary pixels of the class get -(distance to background) + ... = close to 0
        out[c] = ndimage.distance_transform_edt(neg) * neg - (ndimage.distance_transform_edt(pos) - 1) * pos
    out[:, mask == IGNORE_INDEX] = 0
    return out
