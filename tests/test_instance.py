"""Mask R-CNN groundwork: instance data, COCO AP against hand-computed cases, a tiny model that learns and resumes."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data.synthetic import SyntheticShapes
from edgeseg.tasks.instance.evaluate import coco_ap


def test_synthetic_instances_match_the_semantic_scene():
    ds = SyntheticShapes("train", 64)
    for i in range(10):
        img, mask = ds[i]
        img2, t = ds.instances(i)
        assert np.array_equal(img, img2)  # the same scene
        k = len(t["labels"])
        assert t["boxes"].shape == (k, 4) and t["masks"].shape == (k, 64, 64)
        assert (t["boxes"][:, 2] > t["boxes"][:, 0]).all() and (t["boxes"][:, 3] > t["boxes"][:, 1]).all()
        for box, label, m in zip(t["boxes"], t["labels"], t["masks"]):
            assert (mask[m > 0] == label).all() and m.sum() >= 16
            ys, xs = np.nonzero(m)
            assert list(box) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def _rect(y2):
    m = np.zeros((20, 20), np.uint8)
    m[0:y2, 0:10] = 1
    return m


def test_coco_ap_hand_computed():
    gt = [{"boxes": np.array([[0, 0, 10, 10]], np.float32), "labels": np.array([1]), "masks": _rect(10)[None]}]
    perfect = [{**gt[0], "scores": np.array([0.9])}]
    r = coco_ap(gt, perfect, num_classes=2)
    assert r["box"]["AP"] == pytest.approx(1.0) and r["mask"]["AP"] == pytest.approx(1.0)
    # box and mask IoU 0.6 exactly: matched at IoU thresholds 0.50, 0.55, 0.60 of the ten -> AP 0.3
    shifted = [{"boxes": np.array([[0, 0, 10, 6]], np.float32), "labels": np.array([1]), "scores": np.array([0.9]),
                "masks": _rect(6)[None]}]
    r = coco_ap(gt, shifted, num_classes=2)
    assert r["box"]["AP"] == pytest.approx(0.3) and r["mask"]["AP"] == pytest.approx(0.3)
    assert r["box"]["AP50"] == pytest.approx(1.0) and r["box"]["AP75"] == pytest.approx(0.0)
    # the right box with the wrong class finds nothing
    wrong = [{**perfect[0], "labels": np.array([2])}]
    assert coco_ap(gt, wrong, num_classes=3)["mask"]["AP"] == pytest.approx(0.0)


@pytest.mark.slow
def test_tiny_maskrcnn_learns_and_resumes_exactly_through_the_shared_loop(tmp_path, monkeypatch):
    """Mask R-CNN trains through the epoch loop every task shares: it learns on the embedded instances, writes the
    loop's history and best checkpoint, and a run stopped mid-epoch continues from its last step checkpoint to the
    weights of an uninterrupted run (the RPN and RoI samplers draw from the restored RNG)."""
    import torch

    import edgeseg.train.step as step_module
    from edgeseg.core.errors import UsageError
    from edgeseg.tasks.instance.run import CHECKPOINT, load_run, train_run
    from edgeseg.tasks.instance.train import predict

    full = train_run(tmp_path / "learn", data="synthetic?train=16&val=4&test=4", size=64, epochs=3, batch_size=2,
                     lr=0.02, eval_images=4, log=lambda s: None)
    losses = torch.load(tmp_path / "learn" / CHECKPOINT, weights_only=True)["state"]["losses"]
    assert full["steps"] == len(losses) == 24 and np.all(np.isfinite(losses)) and len(full["history"]) == 3
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    assert (tmp_path / "learn" / "history.csv").read_text().startswith("epoch,loss,lr,val_mask_ap,val_box_ap")
    assert (tmp_path / "learn" / "maskrcnn-best.pt").is_file()
    assert 0.0 <= full["best_val_mask_ap"] <= 1.0 and set(full["ap"]) == {"box", "mask"}
    model, _ = load_run(tmp_path / "learn")
    test = SyntheticShapes("test", 64, length=4)
    for p in predict(model, [test.instances(i)[0] for i in range(4)]):
        assert p["masks"].shape[1:] == (1, 64, 64) and len(p["boxes"]) == len(p["scores"]) <= 100  # torchvision's

    # stopped mid-epoch (at step 3 of 8, one image a step), resumed from the step checkpoint after step 2
    kw = dict(data="synthetic?train=4&val=2&test=2", size=64, epochs=2, batch_size=1, eval_images=2,
              log=lambda s: None)
    whole = train_run(tmp_path / "whole", **kw)
    real, calls = step_module.optimizer_step, {"n": 0}

    def stop_at_3(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(step_module, "optimizer_step", stop_at_3)
    with pytest.raises(KeyboardInterrupt):
        train_run(tmp_path / "cut", checkpoint_every=2, **kw)
    monkeypatch.setattr(step_module, "optimizer_step", real)
    saved = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)["state"]
    assert (saved["global_step"], saved["epoch"], saved["step_in_epoch"], saved["finished"]) == (2, 0, 2, False)
    with pytest.raises(UsageError, match="already holds maskrcnn.pt; use --resume"):
        train_run(tmp_path / "cut", **kw)
    with pytest.raises(UsageError, match=r"other settings \(lr=0.01, now 0.02\)"):
        train_run(tmp_path / "cut", resume=True, **{**kw, "lr": 0.02})
    resumed = train_run(tmp_path / "cut", resume=True, **kw)
    assert resumed["steps"] == 8 and resumed["history"] == whole["history"]
    a = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=True)["state_dict"]
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_instance_data_problems_are_counted_or_named():
    from edgeseg.core.errors import DataError
    from edgeseg.tasks.instance.train import usable_indices

    class Data:
        def __init__(self, labels):
            self.labels = labels

        def __len__(self):
            return len(self.labels)

        def name(self, i):
            return f"img{i}.jpg"

        def instances(self, i):
            n = len(self.labels[i])
            return None, {"boxes": np.zeros((n, 4), np.float32), "labels": np.array(self.labels[i], np.int64),
                          "masks": np.zeros((n, 8, 8), np.uint8)}

    keep, skipped = usable_indices(Data([[1], [], [2, 1], []]), num_classes=3)
    assert keep == [0, 2] and skipped == {"no_instances": 2}
    with pytest.raises(DataError, match="img1.jpg: class id 7 is outside the category map \\(1..2\\)"):
        usable_indices(Data([[1], [7]]), num_classes=3)


def test_iou_balanced_box_classifier_loss():
    import torch
    import torch.nn.functional as F

    from edgeseg.tasks.instance.model import build_maskrcnn, use_iou_balanced_loss
    from edgeseg.tasks.instance.train import to_tensors
    ds = SyntheticShapes("train", 64, length=2)
    xs, ts = zip(*(to_tensors(*ds.instances(i), "cpu") for i in range(2)))

    def losses(model, seed=0):
        torch.manual_seed(seed)  # the RoI heads sample proposals at random
        return model(list(xs), list(ts))

    torch.manual_seed(0)
    model = build_maskrcnn(5, "mobilenet_v3_large", min_size=64, mask_layers=(16,), box_batch_size_per_image=32)
    model.train()
    plain = losses(model)
    restore = use_iou_balanced_loss(model, eta=0.0)
    same = losses(model)  # eta 0: every weight 1, torchvision's mean cross-entropy
    # the same positive per-sample terms averaged in another order: for the classifier's n <= 64 RoIs any order is
    # within 64 * 2**-24 = 3.8e-6; the mask loss averages up to 64 * 28 * 28 pixels, and torch's CPU sum is a
    # cascade (pairwise) sum, within ceil(log2 n) * 2**-24 = 1e-6 -- both under rel=1e-5
    assert float(same["loss_classifier"]) == pytest.approx(float(plain["loss_classifier"]), rel=1e-5)
    assert float(same["loss_mask"]) == pytest.approx(float(plain["loss_mask"]), rel=1e-5)
    restore()
    restore = use_iou_balanced_loss(model, eta=1.5)
    balanced = losses(model)
    # recompute by hand from the sampled proposals: labels and IoUs come from the same sampling (same seed)
    torch.manual_seed(0)
    rh = model.roi_heads
    restore()
    images, targets = model.transform(list(xs), list(ts))
    feats = model.backbone(images.tensors)
    props, _ = model.rpn(images, feats, targets)
    props, _, labels, reg = rh.select_training_samples(props, targets)
    gts = [rh.box_coder.decode_single(r, p) for r, p in zip(reg, props)]
    from torchvision.ops import box_iou

    ious = torch.cat([box_iou(p, g).diagonal() for p, g in zip(props, gts)])
    logits = rh.box_predictor(rh.box_head(rh.box_roi_pool(feats, props, images.image_sizes)))[0]
    labels = torch.cat(labels)
    assert (labels > 0).any() and float(ious[labels > 0].min()) >= 0.5  # positives overlap their boxes
    pos = labels > 0
    ce = F.cross_entropy(logits, labels, reduction="none")
    w = torch.ones_like(ce)
    w[pos] = ious[pos] ** 1.5 * pos.sum() / (ious[pos] ** 1.5).sum()  # the paper's normalization, by hand
    assert float(w[pos].std()) > 0.01  # the positives' weights really differ
    assert float(balanced["loss_classifier"]) == pytest.approx(float((w * ce).mean()), rel=1e-5)
    with pytest.raises(Exception, match="eta must be >= 0"):
        use_iou_balanced_loss(model, eta=-1)


def test_backbone_from_a_segmentation_run(tmp_path, tiny_run):
    import torch

    from edgeseg.train.config import TrainConfig
    from edgeseg.core.errors import CheckpointError
    from edgeseg.tasks.instance.model import build_maskrcnn, load_backbone_from_run
    from edgeseg.train.checkpoint import load_checkpoint
    from edgeseg.train.loop import train

    seg = tmp_path / "seg"
    train(TrainConfig(model="lraspp", data="synthetic?train=16&val=4&test=4", image_size=64, epochs=1,
                      batch_size=8), seg, quiet=True, log=lambda s: None)
    model = build_maskrcnn(5, "mobilenet_v3_large", min_size=64)
    assert load_backbone_from_run(model, seg) == 262
    weights = load_checkpoint(seg).weights
    for k, v in model.backbone.body.state_dict().items():
        assert torch.equal(v, weights["encoder.blocks." + k]), k
    with pytest.raises(CheckpointError, match="does not hold a MobileNetV3-Large encoder that fits"):
        load_backbone_from_run(model, tiny_run)  # a U-Net run


def test_letterbox_keeps_boxes_on_their_masks():
    from edgeseg.tasks.instance.run import Letterboxed

    class Wide:
        def __len__(self):
            return 1

        def instances(self, i):
            img = np.full((40, 80, 3), 200, np.uint8)
            m = np.zeros((2, 40, 80), np.uint8)
            m[0, 10:30, 20:60] = 1  # a 40x20 rectangle
            m[1, 4, 4] = 1  # one pixel that nearest resampling at 0.8 skips (source rows/cols 0, 1, 2, 3, 5, ...)
            return img, {"boxes": np.array([[20, 10, 60, 30], [4, 4, 5, 5]], np.float32),
                         "labels": np.array([1, 2]), "masks": m}

    img, t = Letterboxed(Wide(), 64).instances(0)
    assert img.shape == (64, 64, 3) and (img[:32] == 200).all() and (img[32:] == 0).all()  # padded below
    assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"]) == 1  # the vanished instance is dropped
    assert t["labels"].tolist() == [1]
    np.testing.assert_allclose(t["boxes"][0], [16, 8, 48, 24])  # x 0.8
    ys, xs = np.nonzero(t["masks"][0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (16, 8, 48, 24)
    assert t["masks"].shape[1:] == (64, 64)


def test_train_model_maskrcnn_refuses_what_it_cannot_honour(tmp_path, capsys):
    """Semantic-only training flags are refused by name (not silently ignored); --resume needs a checkpoint."""
    from edgeseg.cli import main

    base = ["train", "--model", "maskrcnn", "-o", str(tmp_path / "r"), "--data", "synthetic?train=4", "-q"]
    assert main([*base, "--ema", "0.99", "--loss", "dice"]) == 2
    err = capsys.readouterr().err
    assert "--loss, --ema: not for --model maskrcnn (semantic training only)" in err and "--resume" in err
    assert main([*base, "--resume"]) == 2
    assert f"--resume: no maskrcnn.pt at '{tmp_path / 'r' / 'maskrcnn.pt'}'" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "r").iterdir()] == [".edgeseg.lock"]  # the run lock only, nothing written
    import torch

    torch.save({"weights": {}}, tmp_path / "r" / "maskrcnn.pt")  # a dictionary, not an edgeseg Mask R-CNN checkpoint
    assert main([*base, "--resume"]) == 1
    assert "is not an edgeseg Mask R-CNN checkpoint (no config and state_dict)" in capsys.readouterr().err
