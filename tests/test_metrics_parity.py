import numpy as np
import pytest

from edgeseg.core.metrics import confusion, iou_per_class, mean_iou, pixel_accuracy
from edgeseg.tasks.semantic.parity import NOT_VERIFIED, compare, not_verified, thresholds_for


def test_confusion_and_iou_hand_computed():
    t = np.array([[0, 0, 1], [1, 2, 255]])
    p = np.array([[0, 1, 1], [1, 1, 0]])
    cm = confusion(t, p, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    iou = iou_per_class(cm)
    # class 0: tp 1, union 1+2-1=2 -> 0.5; class 1: tp 2, union 2+4-2=4 -> 0.5; class 2: tp 0, union 1 -> 0
    np.testing.assert_allclose(iou, [0.5, 0.5, 0.0])
    assert mean_iou(cm) == pytest.approx(1 / 3)
    assert pixel_accuracy(cm) == pytest.approx(3 / 5)


def test_absent_class_is_nan_not_zero():
    cm = confusion(np.zeros((2, 2), int), np.zeros((2, 2), int), 3)
    assert np.isnan(iou_per_class(cm)[1]) and mean_iou(cm) == 1.0


def _logits(mask, n=3):
    return np.eye(n, dtype=np.float32)[mask].transpose(0, 3, 1, 2)


def test_compare_reports_figures_and_failures():
    ref_masks = np.zeros((2, 4, 4), int)
    ref_masks[:, :2] = 1
    exp_masks = ref_masks.copy()
    exp_masks[0, 0, 0] = 2  # one pixel of 32 differs
    images = [np.full((3, 4, 4), i, np.float32) for i in range(2)]
    lookup = {0: 0, 1: 1}
    ref = lambda x: _logits(ref_masks[[lookup[int(v)] for v in x[:, 0, 0, 0]]])  # noqa: E731
    exp = lambda x: _logits(exp_masks[[lookup[int(v)] for v in x[:, 0, 0, 0]]])  # noqa: E731
    res = compare(ref, exp, images, list(ref_masks), ["bg", "a", "b"], thresholds_for("fp32"), "t", "fp32")
    assert res.pixel_agreement == pytest.approx(100 * 31 / 32)
    # ref vs exp: bg IoU 16/16=1, a: 15/16, b: 0/1 -> mean of three present classes
    assert res.mask_miou == pytest.approx((1 + 15 / 16 + 0) / 3)
    assert res.max_abs_logit_diff == pytest.approx(1.0)
    assert res.status == "failed" and "pixel agreement 96.875 %" in res.failures[0]
    assert res.iou_change["a"] == pytest.approx(15 / 16 - 1)
    loose = compare(ref, exp, images, list(ref_masks), ["bg", "a", "b"], {"min_agreement": 90.0}, "t", "fp32")
    assert loose.passed


def test_mask_miou_leaves_out_a_class_on_a_handful_of_pixels():
    """A class reference and export show together on under 0.01 % of the pixels is left out of mask mIoU (and
    listed); at 0.01 % or more it counts. Hand-computed on 100 x 100 masks (10,000 pixels: the line is 1 pixel)."""
    from edgeseg.tasks.semantic.parity import mask_miou

    ref = np.zeros((100, 100), int)
    ref[:50] = 1
    exp = ref.copy()
    ref[99, 99] = 2  # the rare class: 1 reference pixel, 0 exported: IoU 0
    value, ignored = mask_miou(confusion(ref, exp, 3), ["bg", "a", "rare"])
    # 1 pixel of 10,000 is not under the line: the class counts, its IoU 0 pulls the mean down by a third
    assert ignored == {} and value == pytest.approx((4999 / 5000 + 1 + 0) / 3)
    big = np.zeros((200, 100), int)  # 20,000 pixels: the one rare pixel is 0.005 %
    big[:100] = 1
    big_ref = big.copy()
    big_ref[199, 99] = 2
    value, ignored = mask_miou(confusion(big_ref, big, 3), ["bg", "a", "rare"])
    assert ignored == {"rare": {"reference_pixels": 1, "exported_pixels": 0}}
    assert value == pytest.approx((9999 / 10000 + 1) / 2)


def test_not_verified_is_never_a_pass():
    r = not_verified("coreml", "fp16", "needs macOS", thresholds_for("fp16"))
    assert r.status == NOT_VERIFIED and not r.passed and r.pixel_agreement is None


def test_default_thresholds():
    task = {"max_miou_drop": 0.01, "max_class_drop": 0.02}
    assert thresholds_for("fp32") == {"min_agreement": 99.9, **task}
    assert thresholds_for("fp16") == {"min_agreement": 99.5, **task}
    assert thresholds_for("int8") == {"min_agreement": 98.0, "min_mask_miou": 0.95, **task}
    assert thresholds_for("int8", min_agreement=90)["min_agreement"] == 90
    assert thresholds_for("int8", max_miou_drop=0.005)["max_miou_drop"] == 0.005
    assert thresholds_for("int8", max_class_drop=0.1)["max_class_drop"] == 0.1


@pytest.mark.parametrize("kw,flag", [({"min_agreement": 101}, "--min-agreement"),
                                     ({"min_mask_miou": -0.1}, "--min-mask-miou"),
                                     ({"max_miou_drop": 1.5}, "--max-miou-drop"),
                                     ({"max_miou_drop": float("nan")}, "--max-miou-drop"),
                                     ({"max_class_drop": -0.01}, "--max-class-drop"),
                                     ({"max_class_drop": float("inf")}, "--max-class-drop")])
def test_bad_threshold_names_its_flag(kw, flag):
    from edgeseg.core.errors import UsageError

    with pytest.raises(UsageError, match=f"^{flag} must be between 0 and "):
        thresholds_for("int8", **kw)


def test_dataset_miou_drop_gate_hand_computed():
    labels = np.zeros((2, 4, 4), int)
    labels[:, :2] = 1  # rows 0-1 class 1, rows 2-3 class 0; the reference predicts the labels exactly
    exp_masks = labels.copy()
    exp_masks[0, 0, :] = 0  # the export loses 4 of the 16 class-1 pixels to class 0
    images = [np.full((3, 4, 4), i, np.float32) for i in range(2)]
    ref = lambda x: _logits(labels[x[:, 0, 0, 0].astype(int)], 2)  # noqa: E731
    exp = lambda x: _logits(exp_masks[x[:, 0, 0, 0].astype(int)], 2)  # noqa: E731
    # export vs labels: class 0 IoU 16/20 = 0.8, class 1 IoU 12/16 = 0.75 -> mIoU 0.775; reference 1.0
    res = compare(ref, exp, images, list(labels), ["bg", "a"], {"min_agreement": 80.0, "max_miou_drop": 0.2},
                  "t", "int8")
    assert res.reference_class_iou == {"bg": 1.0, "a": 1.0}
    assert res.exported_class_iou == {"bg": pytest.approx(0.8), "a": pytest.approx(0.75)}
    assert res.worst_class == {"name": "a", "reference_iou": 1.0, "exported_iou": pytest.approx(0.75),
                               "change": pytest.approx(-0.25)}
    assert res.reference_miou == 1.0 and res.exported_miou == pytest.approx(0.775)
    assert res.miou_drop == pytest.approx(0.225)
    assert res.pixel_agreement == pytest.approx(87.5)  # passes the agreement gate: only the drop fails it
    assert res.status == "failed" and res.failures == ["dataset mIoU drop 0.2250 (1.0000 -> 0.7750) > 0.2"]
    ok = compare(ref, exp, images, list(labels), ["bg", "a"], {"min_agreement": 80.0, "max_miou_drop": 0.25},
                 "t", "int8")
    assert ok.passed and ok.miou_drop == pytest.approx(0.225)
    better = compare(exp, ref, images, list(labels), ["bg", "a"], {"max_miou_drop": 0.0}, "t", "int8")
    assert better.passed and better.miou_drop == pytest.approx(-0.225)  # an export better than PyTorch passes


def test_results_of_several_runtimes_combine_to_the_worst():
    from edgeseg.tasks.semantic.parity import combine_results

    rng = np.random.default_rng(0)
    x = [rng.standard_normal((3, 4, 4)).astype(np.float32) for _ in range(2)]
    y = [np.zeros((4, 4), np.int64) for _ in range(2)]
    ref = lambda b: b  # noqa: E731 - the logits are the input itself
    flip = lambda b: -b  # noqa: E731 - every argmax changes
    t = thresholds_for("fp16")
    good = compare(ref, ref, x, y, ["a", "b", "c"], t, "coreml", "fp16", runtime="Core ML runtime (CPU_ONLY)")
    bad = compare(ref, flip, x, y, ["a", "b", "c"], t, "coreml", "fp16", runtime="Core ML runtime (ALL)")
    both = combine_results([good, bad])
    assert both.status == "failed" and both.pixel_agreement == bad.pixel_agreement
    assert set(both.by_runtime) == {"Core ML runtime (CPU_ONLY)", "Core ML runtime (ALL)"}
    assert both.by_runtime["Core ML runtime (CPU_ONLY)"]["pixel_agreement"] == 100.0
    assert both.failures and all(f.startswith("Core ML runtime (ALL): ") for f in both.failures)
    skipped = not_verified("coreml", "fp16", "needs macOS", t)
    assert combine_results([good, skipped]).status == NOT_VERIFIED


def test_class_gate_fails_one_damaged_class_the_miou_gate_lets_through():
    """Ten classes in stripes; the export turns 2 of class 9's 4 rows into class 8 (hand-computed IoUs):
    class 9 falls from 1 to 2/4 = 0.5 and class 8 from 1 to 4/6, the dataset mIoU only by (0.5 + 1/3) / 10."""
    labels = np.repeat(np.arange(10), 4)[None, :, None].repeat(4, 2)  # (1, 40, 4): class c on rows 4c..4c+3
    exp_masks = labels.copy()
    exp_masks[0, 36:38] = 8
    images = [np.zeros((3, 40, 4), np.float32)]
    ref = lambda x: _logits(labels, 10)  # noqa: E731
    exp = lambda x: _logits(exp_masks, 10)  # noqa: E731
    names = [f"c{i}" for i in range(10)]
    t = {"min_agreement": 90.0, "max_miou_drop": 0.1, "max_class_drop": 0.4}
    res = compare(ref, exp, images, list(labels), names, t, "t", "int8")
    assert res.pixel_agreement == pytest.approx(95.0)
    assert res.miou_drop == pytest.approx((0.5 + 1 / 3) / 10)  # 0.083 < 0.1: the mIoU gate passes it
    assert res.worst_class["name"] == "c9" and res.worst_class["change"] == pytest.approx(-0.5)
    assert res.iou_change["c8"] == pytest.approx(4 / 6 - 1)
    assert res.status == "failed" and res.failures == [
        "class IoU drop 0.5000 on 'c9' (1.0000 -> 0.5000) > 0.4"]
    strict = compare(ref, exp, images, list(labels), names, {**t, "max_class_drop": 0.3}, "t", "int8")
    assert strict.failures == ["class IoU drop 0.5000 on 'c9' (1.0000 -> 0.5000) > 0.3 "
                               "(every class over: c8 -0.3333, c9 -0.5000)"]
    assert compare(ref, exp, images, list(labels), names, {**t, "max_class_drop": 0.5}, "t", "int8").passed
    unlabelled = compare(ref, exp, images, [np.full((40, 4), 255)], names, t, "t", "int8")
    assert unlabelled.worst_class is None and unlabelled.passed  # no labels: no class figure, no class gate


class _ClassNineOnAKnifeEdge(__import__("torch").nn.Module):
    """Ten classes from two input channels, exact in float: channel 0 (v) picks class c = v through hat functions
    (logit 4 at v = c, 0 one step away); channel 1 (s) decides between classes 8 and 9 where v = 8:
    logit_9 - logit_8 = -2 + (2 + eps) s, i.e. -2 at s = 0, eps at s = 1 and 2 + 2 eps at s = 2. At s = 1 the
    margin (eps = 0.001) is far below the int8 output step (~0.03): full int8 rounds both logits to the same level
    and the tie goes to class 8. Class 9 loses exactly its s = 1 pixels; nothing else moves."""

    def __init__(self, eps: float = 0.001):
        import torch
        from torch import nn

        super().__init__()
        self.hid, self.out = nn.Conv2d(3, 30, 1), nn.Conv2d(30, 10, 1)
        with torch.no_grad():
            for p in (*self.hid.parameters(), *self.out.parameters()):
                p.zero_()
            for c in range(9):  # hat_c(v) = relu(v-c+1) - 2 relu(v-c) + relu(v-c-1)
                for j, (off, w) in enumerate(((-1, 1.0), (0, -2.0), (1, 1.0))):
                    self.hid.weight[3 * c + j, 0] = 1.0
                    self.hid.bias[3 * c + j] = -(c + off)
                    self.out.weight[c, 3 * c + j] = 4.0 * w
                    self.out.weight[9, 3 * 8 + j] = 4.0 * w  # class 9 starts from class 8's hat
            self.hid.weight[27, 1] = 1.0  # relu(s)
            self.out.weight[9, 27] = 2.0 + eps
            self.out.bias[9] = -2.0

    def forward(self, x):
        return self.out(self.hid(x).relu())


def test_class_gate_fails_a_class_full_int8_destroys(tmp_path):
    """A real full-int8 TFLite file (LiteRT, XNNPACK) whose rounding destroys 4 % of one class: agreement 99.6 %,
    mask mIoU 0.99 and a dataset-mIoU drop of 0.8 point pass every other default gate; the class gate fails it."""
    import torch

    from exporters import TARGETS, ExportOptions

    model = _ClassNineOnAKnifeEdge().eval()
    rng = np.random.default_rng(0)
    images = []
    for _ in range(10):  # 40 x 25 px: class c on rows 4c..4c+3 (100 px each); class 9's rows carry s = 2 ...
        v = np.repeat(np.arange(10, dtype=np.float32), 4)[:, None].repeat(25, 1)
        s = np.zeros_like(v)
        v[36:], s[36:] = 8.0, 2.0
        s[36:].reshape(-1)[rng.choice(100, 4, replace=False)] = 1.0  # ... but 4 of its 100 pixels s = 1
        images.append(np.stack([v, s, np.zeros_like(v)]))

    def reference(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    labels = [reference(i[None])[0].argmax(0) for i in images]  # the float model is right everywhere
    assert np.bincount(np.concatenate([m.ravel() for m in labels])).tolist() == [1000] * 10
    res = TARGETS["tflite"].export(model, images[0][None], ExportOptions("int8", calibration=[i[None] for i in images]),
                                   tmp_path)
    exported = TARGETS["tflite"].load(res.path, threads=1)
    names = [f"c{i}" for i in range(10)]
    got = compare(reference, exported, images, labels, names, thresholds_for("int8"), "tflite", "int8")
    # the 40 s = 1 pixels of class 9 became class 8 (hand-computed: IoU_9 = 960/1000, IoU_8 = 1000/1040)
    assert got.pixel_agreement == pytest.approx(99.6)
    assert got.worst_class["name"] == "c9" and got.worst_class["change"] == pytest.approx(-0.04)
    assert got.iou_change["c8"] == pytest.approx(1000 / 1040 - 1)
    assert all(got.iou_change[c] == 0 for c in names[:8])
    assert got.miou_drop == pytest.approx((0.04 + 40 / 1040) / 10) and got.miou_drop < 0.01
    assert got.mask_miou > 0.95
    assert got.status == "failed" and len(got.failures) == 1 and got.failures[0].startswith(
        "class IoU drop 0.0400 on 'c9' (1.0000 -> 0.9600) > 0.02")
    # without the class gate (as before it existed) the same file passes every gate
    loose = compare(reference, exported, images, labels, names, {**thresholds_for("int8"), "max_class_drop": 1.0},
                    "tflite", "int8")
    assert loose.passed
