"""Mask R-CNN groundwork: instance data, COCO AP against hand-computed cases, a tiny model that learns."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.data.synthetic import SyntheticShapes
from edgeseg.instance.evaluate import coco_ap


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
def test_tiny_maskrcnn_learns_on_the_embedded_instances():
    import torch

    from edgeseg.instance.model import build_maskrcnn
    from edgeseg.instance.train import predict, train_instance

    torch.manual_seed(0)
    # small proposal and sampling budgets: a CPU-sized model (the defaults are for 800-px COCO images)
    model = build_maskrcnn(5, "mobilenet_v3_large", min_size=64, box_detections_per_img=20,
                           rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100,
                           rpn_post_nms_top_n_test=50, box_batch_size_per_image=64, mask_layers=(32, 32))
    ds = SyntheticShapes("train", 64, length=32)
    res = train_instance(model, ds, epochs=2, batch_size=4, lr=0.02, log=lambda s: None)
    losses = res["losses"]
    assert res["steps"] == 16 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    test = SyntheticShapes("test", 64, length=4)
    preds = predict(model, [test.instances(i)[0] for i in range(4)])
    for p in preds:
        assert p["masks"].shape[1:] == (1, 64, 64) and len(p["boxes"]) == len(p["scores"]) <= 20
    ap = coco_ap([test.instances(i)[1] for i in range(4)], preds, num_classes=5)
    assert 0.0 <= ap["mask"]["AP"] <= 1.0 and set(ap) == {"box", "mask"}


def test_instance_data_problems_are_counted_or_named():
    from edgeseg.errors import DataError
    from edgeseg.instance.train import usable_indices

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
