"""The bundle's TFLite file as a real app client runs it: MediaPipe Tasks' ImageSegmenter (Python; the same C++
graph as Android's ``tasks-vision``), on camera frames of any shape, against the PyTorch reference on the same frame.

MediaPipe resizes whatever it is given to the model's W x H by stretching. A model trained with ``letterbox`` (or
``crop``) then sees a geometry it never trained on when the frame's aspect ratio differs from the model's, so the
bundle's Kotlin fits the frame itself first (its ``fit``: the training geometry, at exactly W x H, so MediaPipe's
resize is the identity) and maps the W x H mask back onto the frame (``toFrame``). :func:`frame_mask` gives both:
``fit=True`` is what the bundle's code does, ``fit=False`` a frame handed to MediaPipe as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

#: frame shapes (height, width) an app meets: the model's own square, landscape 4:3, portrait 9:16
FRAME_SHAPES = {"square": (128, 128), "4:3 landscape": (96, 128), "9:16 portrait": (128, 72)}


def mediapipe_segment(model: Path, frame: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """MediaPipe ImageSegmenter's class map of one RGB uint8 frame (at the frame's size) and the labels it read
    from the model's metadata (it reads the input encoding there too)."""
    from exporters.native import preload_triton, without_tensorflow

    preload_triton()
    with without_tensorflow():
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

    opts = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(model)),
                                        output_category_mask=True, output_confidence_masks=False)
    with vision.ImageSegmenter.create_from_options(opts) as seg:
        res = seg.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
        return res.category_mask.numpy_view().squeeze(-1).astype(np.int64), list(seg.labels)


def frame_mask(model: Path, preprocess, frame: np.ndarray, fit: bool = True) -> np.ndarray:
    """The frame's class map as an app gets it from MediaPipe: ``fit`` — the frame fitted as in training first
    and the W x H mask mapped back (``preprocess``'s geometry: the bundle's Kotlin) — or the frame handed over as
    it is (MediaPipe stretches it)."""
    if not fit:
        return mediapipe_segment(model, frame)[0]
    h, w = frame.shape[:2]
    return preprocess.to_label(mediapipe_segment(model, preprocess.resize_image(frame))[0], h, w)


def reshape_frames(images: Sequence[np.ndarray], shape: tuple[int, int]) -> list[np.ndarray]:
    """Test images as camera frames of ``shape`` (height, width): resized (bilinear), content and all."""
    from PIL import Image

    h, w = shape
    return [np.asarray(Image.fromarray(np.asarray(i, np.uint8)).resize((w, h), Image.BILINEAR)) for i in images]
