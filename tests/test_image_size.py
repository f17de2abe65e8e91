"""Camera-shaped models: ``--image-size HxW``, ``--resize letterbox|stretch|crop`` and dataset figures at the
label's own size (issue 19)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.core.image_size import parse_image_size
from edgeseg.train.config import TrainConfig
from edgeseg.data.base import IGNORE_INDEX
from edgeseg.data.transforms import Preprocess
from edgeseg.core.errors import UsageError


def test_image_size_accepts_a_side_or_height_x_width():
    assert parse_image_size(256) == (256, 256)
    assert parse_image_size("360x480") == (360, 480) and parse_image_size("144X256") == (144, 256)
    assert parse_image_size([288, 512]) == (288, 512) and parse_image_size("96") == (96, 96)
    cfg = TrainConfig(image_size="64x96")
    assert (cfg.image_size, cfg.height, cfg.width, cfg.resize) == ("64x96", 64, 96, "letterbox")
    assert TrainConfig(image_size="64x64").image_size == 64  # square sizes stay ints (old runs compare equal)
    assert TrainConfig.from_dict({"image_size": "360x480"}).width == 480
    for bad in ("360*480", "x480", "360x", True, 1.5):
        with pytest.raises(UsageError, match=r"config: 'image_size' must be a side such as 256 or HEIGHTxWIDTH"):
            TrainConfig.from_dict({"image_size": bad})
    with pytest.raises(UsageError, match=r"image_size='8x64' must be at least 16"):
        TrainConfig(image_size="8x64")
    with pytest.raises(UsageError, match=r"resize='pad' must be one of letterbox, stretch, crop"):
        TrainConfig(resize="pad")


def _frame(h, w):
    return (np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)


def test_letterbox_places_the_frame_centred_on_black_and_ignores_the_padding():
    pre = Preprocess(4, 8, resize="letterbox")
    img = _frame(4, 4)
    out = pre.resize_image(img)
    assert out.shape == (4, 8, 3)
    assert np.array_equal(out[:, 2:6], img) and not out[:, :2].any() and not out[:, 6:].any()
    mask = np.arange(16).reshape(4, 4) % 3
    m = pre.mask(mask)
    assert np.array_equal(m[:, 2:6], mask) and (m[:, :2] == IGNORE_INDEX).all() and (m[:, 6:] == IGNORE_INDEX).all()
    # back onto the frame exactly (scale 1: nearest is the identity)
    assert np.array_equal(pre.to_label(m, 4, 4), mask)
    # rounding: CamVid's 360x480 into 256x256 is 192x256 at top 32; halves round up (Kotlin's Math.round)
    g = Preprocess(256, 256, resize="letterbox").geometry(360, 480)
    assert (g.scaled_h, g.scaled_w, g.top, g.left) == (192, 256, 32, 0)
    g = Preprocess(5, 5, resize="letterbox").geometry(2, 4)  # 2.5 rows -> 3
    assert (g.scaled_h, g.scaled_w, g.top, g.left) == (3, 5, 1, 0)


def test_crop_cuts_the_centre_and_maps_back_to_the_seen_part_only():
    pre = Preprocess(4, 4, resize="crop")
    img = _frame(4, 8)
    assert np.array_equal(pre.resize_image(img), img[:, 2:6])
    mask = np.arange(32).reshape(4, 8) % 4
    assert np.array_equal(pre.mask(mask), mask[:, 2:6])
    back = pre.to_label(pre.mask(mask), 4, 8)
    assert np.array_equal(back[:, 2:6], mask[:, 2:6]) and (back[:, :2] == IGNORE_INDEX).all() \
        and (back[:, 6:] == IGNORE_INDEX).all()


def test_stretch_is_the_old_behaviour_and_old_checkpoints_read_as_stretch():
    pre = Preprocess(4, 4, resize="stretch")
    assert pre.geometry(4, 8).scaled_w == 4 and pre.mask(np.zeros((4, 8), np.int64)).shape == (4, 4)
    old = {"height": 8, "width": 8, "mean": [0.5] * 3, "std": [0.2] * 3, "layout": "NCHW RGB float32"}
    assert Preprocess.from_json(old).resize == "stretch"
    assert Preprocess.from_json(Preprocess(8, 8, resize="crop").to_json()).resize == "crop"


def test_dataset_figures_at_the_label_size_parity_at_the_model_size():
    """Model 4x8, frames 4x4 letterboxed to columns 2..5. The export disagrees with the reference in the
    padding (never shown to a user) and on one frame pixel: parity counts the padding only when it is not told
    where the frame is; the dataset figures count the frame pixel once per label pixel."""
    from edgeseg.tasks.semantic.parity import compare

    pre = Preprocess(4, 8, resize="letterbox")
    label = np.zeros((4, 4), np.int64)
    label[:2] = 1
    ref_mask = np.full((4, 8), 0)
    ref_mask[:2, 2:6] = 1
    exp_mask = ref_mask.copy()
    exp_mask[:, :2] = 1       # padding
    exp_mask[3, 3] = 1        # one frame pixel (label 0) -> frame pixel (3, 1)

    def logits(mask):
        return lambda x: np.stack([np.eye(2)[mask].transpose(2, 0, 1)] * len(x)).astype(np.float32)

    x = [np.zeros((3, 4, 8), np.float32)]
    r = compare(logits(ref_mask), logits(exp_mask), x, [pre.mask(label)], ["bg", "fg"],
                {"min_agreement": 0.0}, "tflite", "fp32", labels=[label], to_label=pre.to_label, region=pre.region)
    assert r.pixel_agreement == pytest.approx(100 * 15 / 16)  # the frame's 16 pixels, one differs
    assert r.mask_miou == pytest.approx((7 / 8 + 8 / 9) / 2)
    assert r.task_resolution == "label"
    assert r.reference_miou == 1.0
    # exported at the label's size: bg IoU 7/8, fg IoU 8/9
    assert r.exported_miou == pytest.approx((7 / 8 + 8 / 9) / 2)
    assert r.model_resolution_miou == {"reference_miou": 1.0, "exported_miou": pytest.approx((7 / 8 + 8 / 9) / 2)}
    plain = compare(logits(ref_mask), logits(exp_mask), x, [pre.mask(label)], ["bg", "fg"], {}, "tflite", "fp32")
    assert plain.task_resolution == "model" and plain.model_resolution_miou is None
    assert plain.pixel_agreement == pytest.approx(100 * (32 - 9) / 32)  # padding counted
    assert pre.region(4, 4).sum() == 16 and pre.region(4, 4)[:, 2:6].all()


@pytest.mark.slow
def test_camera_shaped_run_trains_exports_checks_reports_and_bundles(tmp_path):
    """44x60 (not a multiple of U-Net's stride 8: padded to 48x64 inside the graph) from 60x60 synthetic
    frames letterboxed into it: every target keeps the 44x60 NHWC/NCHW contract and passes its gate; the
    bundle states the size and the resize rule and its Kotlin fits frames the same way."""
    from edgeseg.steps.bundle.verify import validate, verify_bundle
    from edgeseg.cli import main
    from edgeseg.train.config import TrainConfig
    from edgeseg.train.loop import train

    run = tmp_path / "run"
    train(TrainConfig(model="unet", model_kwargs={"base": 8, "depth": 3}, data="synthetic?train=48&val=8&test=8",
                      image_size="44x60", epochs=3, batch_size=8, lr=1e-2, precise_bn_batches=4, seed=1),
          run, quiet=True, log=lambda s: None)
    for target, precision in (("tflite", "fp32"), ("coreml", "fp16"), ("onnx", "fp32")):
        assert main(["export", str(run), "--target", target, "--precision", precision, "-q"]) == 0
        assert main(["check", str(run), "--target", target, "--precision", precision, "-q"]) == 0
        p = json.loads((run / "export" / f"{target}-{precision}" / "parity.json").read_text())
        assert p["status"] == "passed" and p["task_resolution"] == "label", p
        assert set(p["model_resolution_miou"]) == {"reference_miou", "exported_miou"}
    from exporters import TARGETS

    x = np.random.default_rng(0).standard_normal((1, 3, 44, 60)).astype(np.float32)
    assert TARGETS["tflite"].load(run / "export" / "tflite-fp32" / "model.tflite")(x).shape == (1, 5, 44, 60)  # 5 classes
    assert main(["report", str(run), "--runs", "2", "-q", "--json"]) == 0
    dist = tmp_path / "dist"
    assert main(["bundle", str(run), "-o", str(dist), "-q"]) == 0
    m = json.loads((dist / "manifest.json").read_text())
    assert validate(m) == [] and verify_bundle(dist) == []
    assert (m["input"]["height"], m["input"]["width"], m["input"]["resize"]) == (44, 60, "letterbox")
    assert m["input"]["resize_rule"].startswith("H x W = 44 x 60: scale = min(H / frame_h, W / frame_w)")
    assert m["platforms"]["android"]["input"]["shape"] == [1, 44, 60, 3]
    assert m["platforms"]["ios"]["input"]["shape"] == [1, 3, 44, 60]
    readme = (dist / "README.md").read_text()
    assert "const val W = 60" in readme and "const val H = 44" in readme
    # the letterbox geometry as the pure logic that tests/test_app_kotlin.py runs on the JVM against Preprocess
    assert "Math.round(frameH * s)" in readme and "eraseColor(Color.BLACK)" in readme
    assert "fun toFrame(classes: IntArray, frameW: Int, frameH: Int): IntArray" in readme
    assert "imageCropAndScaleOption = .scaleFit" in readme and "{{" not in readme
    # that ONNX file as a user's model (edgeseg import onnx:): its in-graph pad (Concat) and crop (Slice) come back
    # through onnx2torch; the crop's bounds, computed from constants there, are folded before onnx2tf, which
    # otherwise cut the wrong NHWC axis (a 48x44 output)
    imp = tmp_path / "imported"
    assert main(["import", f"onnx:{run / 'export' / 'onnx-fp32' / 'model.onnx'}", "-o", str(imp), "--data",
                 "synthetic?train=48&val=8&test=8", "-q"]) == 0
    assert main(["export", str(imp), "--target", "tflite", "-q"]) == 0
    assert TARGETS["tflite"].load(imp / "export" / "tflite-fp32" / "model.tflite")(x).shape == (1, 5, 44, 60)
    assert main(["check", str(imp), "--target", "tflite", "-q"]) == 0
