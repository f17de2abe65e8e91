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


def test_not_verified_is_never_a_pass():
    r = not_verified("coreml", "fp16", "needs macOS", thresholds_for("fp16"))
    assert r.status == NOT_VERIFIED and not r.passed and r.pixel_agreement is None


def test_default_thresholds():
    assert thresholds_for("fp32") == {"min_agreement": 99.9, "max_miou_drop": 0.01}
    assert thresholds_for("fp16") == {"min_agreement": 99.5, "max_miou_drop": 0.01}
    assert thresholds_for("int8") == {"min_agreement": 98.0, "min_mask_miou": 0.95, "max_miou_drop": 0.01}
    assert thresholds_for("int8", min_agreement=90)["min_agreement"] == 90
    assert thresholds_for("int8", max_miou_drop=0.005)["max_miou_drop"] == 0.005


@pytest.mark.parametrize("kw,flag", [({"min_agreement": 101}, "--min-agreement"),
                                     ({"min_mask_miou": -0.1}, "--min-mask-miou"),
                                     ({"max_miou_drop": 1.5}, "--max-miou-drop"),
                                     ({"max_miou_drop": float("nan")}, "--max-miou-drop")])
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
