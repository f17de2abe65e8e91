"""MediaPipe Tasks' ImageSegmenter — the client an Android/iOS app runs — on one frame (used by the tests of pixel-input
TFLite files: the exporter's and the int8 ladder's)."""

from __future__ import annotations

import numpy as np


def category_mask(path, pixels_hwc: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The segmenter's class map of one RGB uint8 frame and its labels; it reads the model's metadata
    (normalization, labels) itself."""
    from exporters.native import preload_triton

    preload_triton()
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    opts = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                        output_category_mask=True, output_confidence_masks=False)
    with vision.ImageSegmenter.create_from_options(opts) as seg:
        res = seg.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels_hwc)))
        return res.category_mask.numpy_view().squeeze(-1).copy(), list(seg.labels)
