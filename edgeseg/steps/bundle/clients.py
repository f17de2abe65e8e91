"""The bundle's TFLite file as a real app client runs it: MediaPipe Tasks' ImageSegmenter (Python; the same C++
graph as Android's ``tasks-vision``), on camera frames of any shape, against the PyTorch reference on the same frame.

MediaPipe resizes whatever it is given to the model's W x H by stretching. A model trained with ``letterbox`` (or
``crop``) then sees a geometry it never trained on when the frame's aspect ratio differs from the model's, so the
bundle's Kotlin fits the frame itself first (its ``fit``: the training geometry, at exactly W x H, so MediaPipe's
resize is the identity) and maps the W x H mask back onto the frame (``toFrame``). :func:`frame_agreement` measures
both ways: ``fit=True`` is what the bundle's code does, ``fit=False`` a frame handed to MediaPipe as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

#: frame shapes (height, width) an app meets: the model's own square, landscape 4:3, portrait 9:16
FRAME_SHAPES = {"square": (128, 128), "4:3 landscape": (96, 128), "9:16 portrait": (128, 72)}


def mediapipe_mask(model: Path, frame: np.ndarray) -> np.ndarray:
    """MediaPipe ImageSegmenter's class map of one RGB uint8 frame (at the frame's size); it reads the model's
    metadata (input encoding, labels) itself."""
    from exporters.native import preload_triton, without_tensorflow

    preload_triton()
    with without_tensorflow():
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

    opts = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(model)),
                                        output_category_mask=True, output_confidence_masks=False)
    with vision.ImageSegmenter.create_from_options(opts) as seg:
        res = seg.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
        return res.category_mask.numpy_view().squeeze(-1).astype(np.int64)


def frame_agreement(model: Path, reference, preprocess, frames: Sequence[np.ndarray], fit: bool = True) -> float:
    """% of frame pixels where MediaPipe's class equals the reference's (``reference``: normalized NCHW batch ->
    logits; its mask mapped back onto the frame as the app maps it). ``fit``: the app fits the frame to the
    training geometry before MediaPipe (the bundle's code), else MediaPipe gets the frame as it is."""
    same = total = 0
    for frame in frames:
        h, w = frame.shape[:2]
        ref = preprocess.to_label(np.asarray(reference(preprocess.image(frame)[None]))[0].argmax(0), h, w)
        if fit:
            got = preprocess.to_label(mediapipe_mask(model, preprocess.resize_image(frame)), h, w)
        else:
            got = mediapipe_mask(model, frame)
        same += int((got == ref).sum())
        total += ref.size
    return 100.0 * same / max(total, 1)


def reshape_frames(images: Sequence[np.ndarray], shape: tuple[int, int]) -> list[np.ndarray]:
    """Test images as camera frames of ``shape`` (height, width): resized (bilinear), content and all."""
    from PIL import Image

    h, w = shape
    return [np.asarray(Image.fromarray(np.asarray(i, np.uint8)).resize((w, h), Image.BILINEAR)) for i in images]
