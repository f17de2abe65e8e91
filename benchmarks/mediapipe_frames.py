"""MediaPipe's ImageSegmenter (the bundle's Android/iOS client, same C++ graph) on camera frames of every shape.

For square, 4:3 landscape and 9:16 portrait frames (test images resized to those shapes), the % of frame pixels
where the client's class equals PyTorch's (the reference letterboxed as in training, its mask mapped back onto the
frame): MediaPipe handed the frame fitted first as the bundle's Kotlin does (``fit`` / ``toFrame``), MediaPipe
handed the frame as it is (it stretches), and edgeseg's own LiteRT runner on the fitted frame, plus how often the
fitted MediaPipe mask equals LiteRT's.

    python benchmarks/mediapipe_frames.py RUN [--export tflite-int8-pixels] [--images 8]
    (RUN has the pixel-input export: edgeseg export RUN --target tflite --precision int8 --input pixels)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--export", default="tflite-int8-pixels", help="the export folder under RUN/export")
    ap.add_argument("--images", type=int, default=8)
    a = ap.parse_args()
    model = a.run / "export" / a.export / "model.tflite"
    if not model.exists():
        raise SystemExit(f"{model} does not exist; first: edgeseg export {a.run} --target tflite --precision int8 "
                         f"--input pixels")
    import torch

    from edgeseg.data import open_split
    from edgeseg.steps.bundle.clients import FRAME_SHAPES, frame_mask, reshape_frames
    from edgeseg.train.checkpoint import load_checkpoint
    from exporters import TARGETS

    ck = load_checkpoint(a.run)
    ref_model, _ = ck.reference_model()
    pre, lite = ck.preprocess, TARGETS["tflite"].load(model)
    test = open_split(ck.config.data, "test", ck.config.image_size)
    images = [test[i][0] for i in range(min(a.images, len(test)))]
    print(f"{model} ({pre.height}x{pre.width}, trained with resize={pre.resize}), {len(images)} test images")
    print(f"{'frame (h x w)':24s} {'MediaPipe fitted':>17s} {'MediaPipe as is':>16s} {'LiteRT':>8s} "
          f"{'MediaPipe fitted == LiteRT':>27s}   (% of frame pixels; the first three against PyTorch)")
    for name, shape in FRAME_SHAPES.items():
        n, hits = 0, {"fit": 0, "as_is": 0, "lite": 0, "mp_lite": 0}
        for f in reshape_frames(images, shape):
            h, w = shape
            with torch.no_grad():
                ref = pre.to_label(ref_model(torch.from_numpy(pre.image(f)[None])).numpy()[0].argmax(0), h, w)
            lt = pre.to_label(lite(pre.image(f)[None])[0].argmax(0), h, w)
            fit, as_is = frame_mask(model, pre, f), frame_mask(model, pre, f, fit=False)
            hits["fit"] += int((fit == ref).sum())
            hits["as_is"] += int((as_is == ref).sum())
            hits["lite"] += int((lt == ref).sum())
            hits["mp_lite"] += int((fit == lt).sum())
            n += ref.size
        pct = {k: 100 * v / n for k, v in hits.items()}
        print(f"{name + f' {shape[0]}x{shape[1]}':24s} {pct['fit']:16.3f}% {pct['as_is']:15.3f}% {pct['lite']:7.3f}% "
              f"{pct['mp_lite']:26.3f}%", flush=True)
    os._exit(0)  # mediapipe 1.2's segmenter finalizers can hang at interpreter exit


if __name__ == "__main__":
    main()
