"""Every loss against hand-computed values and identities on tiny tensors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeseg.data.base import IGNORE_INDEX
from edgeseg.core.errors import UsageError
from edgeseg.losses import LOSSES, parse_loss
from edgeseg.losses.distance import signed_distance_maps


def one(spec, c=3):
    return parse_loss(spec, c).terms[0].loss


def _batch(seed=0, c=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, 6, 6, generator=g)
    y = torch.randint(0, c, (2, 6, 6), generator=g)
    y[0, 0, :3] = 255
    dist = torch.from_numpy(np.stack([signed_distance_maps(m.numpy(), c) for m in y]))
    return x, y, dist


def test_focal_gamma0_and_topk100_equal_ce():
    x, y, _ = _batch()
    ce = F.cross_entropy(x, y, ignore_index=255)
    # the same 69 per-pixel terms averaged by another kernel: float32 summation order moves the mean by at most
    # 69 * 2**-24 = 4.1e-6 of it (all terms are positive), so rel=1e-5 holds for any order
    assert one("focal(gamma=0)")(x, y).item() == pytest.approx(ce.item(), rel=1e-5)
    assert one("topk(k=100)")(x, y).item() == pytest.approx(ce.item(), rel=1e-5)
    assert one("ce")(x, y).item() == pytest.approx(ce.item(), rel=1e-5)


def test_focal_hand_computed():
    # two classes, p_t = 0.75 for every pixel: FL = -(0.25^2) ln 0.75 with gamma 2
    x = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).repeat(1, 1, 2, 2)
    y = torch.ones(1, 2, 2, dtype=torch.long)
    assert one("focal(gamma=2)", 2)(x, y).item() == pytest.approx(-(0.25 ** 2) * math.log(0.75), rel=1e-5)
    a = one("focal(gamma=2, alpha=[0.5;2])", 2)(x, y).item()
    assert a == pytest.approx(-2 * (0.25 ** 2) * math.log(0.75), rel=1e-5)


def test_topk_takes_the_hardest_pixels():
    x = torch.zeros(1, 2, 1, 4)
    x[0, 1, 0] = torch.tensor([3.0, 1.0, -1.0, -3.0])
    y = torch.ones(1, 1, 4, dtype=torch.long)
    per_pixel = F.cross_entropy(x, y, reduction="none").flatten()
    assert one("topk(k=50)", 2)(x, y).item() == pytest.approx(per_pixel.sort().values[-2:].mean().item(), rel=1e-6)


def test_dice_and_jaccard_hand_computed():
    # p(class1) = 0.75 on two pixels whose truth is 1 and 0
    x = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).repeat(1, 1, 1, 2)
    y = torch.tensor([[[1, 0]]])
    # class 1: inter 0.75, Σp 1.5, Σg 1 ; class 0: inter 0.25, Σp 0.5, Σg 1
    d1, d0 = 1 - 2 * 0.75 / 2.5, 1 - 2 * 0.25 / 1.5
    assert one("dice(smooth=0)", 2)(x, y).item() == pytest.approx((d0 + d1) / 2, rel=1e-5)
    j1, j0 = 1 - 0.75 / (2.5 - 0.75), 1 - 0.25 / (1.5 - 0.25)
    assert one("jaccard(smooth=0)", 2)(x, y).item() == pytest.approx((j0 + j1) / 2, rel=1e-5)
    s1 = 1 - 2 * 0.75 / (0.75 ** 2 * 2 + 1)
    s0 = 1 - 2 * 0.25 / (0.25 ** 2 * 2 + 1)
    assert one("dice(smooth=0, squared=true)", 2)(x, y).item() == pytest.approx((s0 + s1) / 2, rel=1e-5)


def test_dice_of_a_perfect_prediction_is_zero():
    y = torch.randint(0, 3, (2, 5, 5))
    x = F.one_hot(y, 3).permute(0, 3, 1, 2).float() * 50
    assert one("dice")(x, y).item() == pytest.approx(0.0, abs=1e-6)
    assert one("jaccard")(x, y).item() == pytest.approx(0.0, abs=1e-6)


def test_sensitivity_specificity_hand_computed():
    x = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).repeat(1, 1, 1, 2)
    y = torch.tensor([[[1, 0]]])
    # class 1: g=[1,0], p=[.75,.75] -> sens = .0625/1, spec = .5625/1 ; class 0 mirrors: g=[0,1], p=[.25,.25]
    r = 0.1
    c1 = r * 0.0625 + (1 - r) * 0.5625  # sens (1-.75)^2, spec .75^2
    c0 = r * 0.5625 + (1 - r) * 0.0625  # sens (1-.25)^2, spec .25^2
    assert one("sensitivity_specificity(r=0.1, smooth=0)", 2)(x, y).item() == pytest.approx((c0 + c1) / 2, rel=1e-5)


def test_lovasz_on_hard_predictions_equals_one_minus_iou():
    y = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 2, 0, 1]]])
    x = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 100
    iou = []
    for c in range(3):
        inter = ((y == c) & (pred == c)).sum().item()
        union = ((y == c) | (pred == c)).sum().item()
        iou.append(inter / union)
    assert one("lovasz")(x, y).item() == pytest.approx(1 - sum(iou) / 3, abs=1e-4)
    assert one("lovasz(per_image=true)")(x, y).item() == pytest.approx(1 - sum(iou) / 3, abs=1e-4)


@pytest.mark.parametrize("per_image", [False, True])
def test_bucket_sorted_lovasz_matches_the_sorted_one(per_image):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 9, 7, generator=g) * 3
    y = torch.randint(0, 4, (2, 9, 7), generator=g)
    y[0, :2] = IGNORE_INDEX
    y[1] = torch.where(y[1] == 3, 0, y[1])  # class 3 absent from image 1: only present classes count
    opts = f"per_image={str(per_image).lower()}"
    xs = [x.clone().requires_grad_(True) for _ in range(3)]
    exact = one(f"lovasz({opts};bins=0)", 4)(xs[0], y)
    coarse = one(f"lovasz({opts};bins=64)", 4)(xs[1], y)
    fine = one(f"lovasz({opts};bins=1048576)", 4)(xs[2], y)
    for v in (exact, coarse, fine):
        v.backward()
    # the bucket-sorted value is within 1/bins below the sorted one
    assert 0 <= exact.item() - coarse.item() <= 1 / 64
    assert fine.item() == pytest.approx(exact.item(), abs=1e-5)
    # with one pixel per bucket the weights are Berman et al.'s exact Lovász gradients
    assert torch.allclose(xs[2].grad, xs[0].grad, atol=1e-6)
    assert xs[1].grad[0, :, :2].abs().max() == 0


def test_signed_distance_and_boundary_loss_sign_on_a_square():
    disk = np.zeros((21, 21), np.int64)
    disk[5:15, 5:15] = 1
    d = signed_distance_maps(disk, 2)
    # Kervadec's convention: outside = distance to the class, inside = -(distance to outside - 1)
    assert d[1, 10, 10] == pytest.approx(-4.0) and d[1, 10, 0] == pytest.approx(5.0)
    assert d[1, 10, 14] == pytest.approx(0.0)  # a boundary pixel of the square
    assert d[0, 10, 10] == pytest.approx(5.0)  # background class: the square is outside it
    y = torch.from_numpy(disk)[None]
    dist = torch.from_numpy(d)[None]
    good = F.one_hot(y, 2).permute(0, 3, 1, 2).float() * 30
    bad = F.one_hot(1 - y, 2).permute(0, 3, 1, 2).float() * 30
    loss = one("boundary", 2)
    assert loss(good, y, dist).item() < 0 < loss(bad, y, dist).item()
    h = one("hausdorff", 2)
    assert h(good, y, dist).item() == pytest.approx(0.0, abs=1e-6) and h(bad, y, dist).item() > 1


@pytest.mark.parametrize("name", LOSSES.names())
def test_ignored_pixels_contribute_nothing_and_gradients_are_finite(name):
    x, y, dist = _batch()
    edge = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(1)) * 3
    loss = one(name)
    reads = getattr(loss, "reads_outputs", ())

    def call(logits, edges):
        torch.manual_seed(0)  # dual_task's Gumbel noise
        return loss({"out": logits, "edge": edges} if reads else logits, y, dist)

    x1, e1 = x.clone().requires_grad_(True), edge.clone().requires_grad_(True)
    v1 = call(x1, e1)
    v1.backward()
    assert torch.isfinite(v1)
    grads = [gr for gr in (x1.grad, e1.grad) if gr is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert all(gr[0, :, 0, :3].abs().max() == 0 for gr in grads)  # ignored pixels get no gradient
    x2, e2 = x.clone(), edge.clone()
    x2[0, :, 0, :3] = torch.randn(3, 3) * 10
    e2[0, :, 0, :3] = torch.randn(1, 3) * 10
    assert call(x2, e2).item() == pytest.approx(v1.item(), rel=1e-5)


def test_composition_and_schedules():
    x, y, dist = _batch()
    comp = parse_loss("ce + 0.5*dice(smooth=1) + 2*lovasz@3", 3)
    ce, dice, lov = (t.loss(x, y, dist).item() for t in comp.terms)
    assert comp(x, y, dist, epoch=0).item() == pytest.approx(ce + 0.5 * dice, rel=1e-5)
    assert comp(x, y, dist, epoch=3).item() == pytest.approx(ce + 0.5 * dice + 2 * lov, rel=1e-5)
    assert not comp.needs_distance_maps and parse_loss("dice + 0.01*boundary", 3).needs_distance_maps
    w = parse_loss("ce", 3, class_weights=[1.0, 2.0, 0.5]).terms[0].loss.weight
    assert w.tolist() == [1.0, 2.0, 0.5]


@pytest.mark.parametrize("spec,msg", [
    ("dicee", "unknown loss 'dicee' \\(did you mean 'dice'\\?\\)"),
    ("dice(smoth=1)", "'dice' has no parameter 'smoth' \\(did you mean 'smooth'\\?\\)"),
    ("ce(weight=[1;2])", "loss 'ce': weight has 2 values but there are 3 classes"),
    ("focal(alpha=[1;-1;1])", "loss 'focal': weights must be >= 0"),
    ("topk(k=0)", "loss 'topk': k must be in \\(0, 100\\]"),
    ("topk(k=150)", "loss 'topk': k must be in \\(0, 100\\]"),
    ("lovasz(bins=1)", "loss 'lovasz': bins must be 0 \\(exact sort\\) or an integer >= 2"),
    ("ce + -1*dice", "cannot read term|must be >= 0"),
])
def test_bad_loss_specs(spec, msg):
    with pytest.raises(UsageError, match=msg):
        parse_loss(spec, 3)


def test_boundary_loss_without_distance_maps():
    x, y, _ = _batch()
    with pytest.raises(UsageError, match="loss 'boundary' needs distance maps"):
        one("boundary")(x, y, None)


# Boundary-based losses are trained with a region loss, as their papers prescribe.
TRAIN_SPECS = {"ce": "ce", "focal": "focal", "topk": "topk(k=20)", "dpce": "dpce", "dice": "dice",
               "jaccard": "jaccard", "sensitivity_specificity": "sensitivity_specificity(r=0.5)",
               "lovasz": "lovasz", "boundary": "dice + 0.1*boundary", "hausdorff": "dice + 0.01*hausdorff",
               "dual_task": "dice + dual_task"}
# Gated-SCNN's edge terms read its edge output, so they train a tiny Gated-SCNN with CE.
GSCNN_SPECS = {"edge_bce": "ce + edge_bce", "edge_attention": "ce + edge_attention"}


def test_every_loss_has_a_training_spec():
    assert set(TRAIN_SPECS) | set(GSCNN_SPECS) == set(LOSSES.names())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRAIN_SPECS) + sorted(GSCNN_SPECS))
def test_each_loss_trains_a_tiny_model(name, tmp_path):
    from edgeseg.train.config import TrainConfig
    from edgeseg.train.loop import train

    if name in GSCNN_SPECS:
        model, kwargs, size, spec, lr = ("gscnn", {"encoder": "mobilenet_v3_small", "channels": 16}, 64,
                                         GSCNN_SPECS[name], 3e-3)
    else:
        model, kwargs, size, spec, lr = "unet", {"base": 8, "depth": 2}, 48, TRAIN_SPECS[name], 1e-2
    cfg = TrainConfig(model=model, model_kwargs=kwargs, data="synthetic?train=48&val=12&test=4",
                      image_size=size, epochs=4, batch_size=8, lr=lr, precise_bn_batches=4, seed=0, loss=spec)
    ck = train(cfg, tmp_path / "run", quiet=True, log=lambda s: None)
    hist = ck.metrics["history"]
    print(name, [round(h["val_miou"], 3) for h in hist], round(ck.metrics["val"]["miou"], 3))
    assert ck.metrics["val"]["miou"] > max(0.3, hist[0]["val_miou"])


def test_boundary_ramp_schedule():
    comp = parse_loss("dice + boundary@2~0.25", 3)
    t = comp.terms[1]
    assert [t.weight_at(e) for e in range(7)] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    with pytest.raises(UsageError, match="ramp of 'boundary' must be > 0"):
        parse_loss("dice + boundary~0", 3)


def test_iou_balanced_classification_loss():
    from edgeseg.losses.iou_balanced import iou_balanced_cross_entropy

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1, 1])
    ious = torch.tensor([0.0, 0.5, 1.0])
    ce = F.cross_entropy(logits, labels, reduction="none")
    # eta=1: positive weights 0.5 and 1.0 normalized to sum 2 -> 2/3 and 4/3; negative weight 1
    expected = (ce[0] + (2 / 3) * ce[1] + (4 / 3) * ce[2]) / 3
    assert iou_balanced_cross_entropy(logits, labels, ious, eta=1.0).item() == pytest.approx(expected.item(), rel=1e-6)
    # eta=0 is plain CE: the total is kept constant whatever the IoUs
    assert iou_balanced_cross_entropy(logits, labels, ious, eta=0.0).item() == pytest.approx(ce.mean().item(), rel=1e-6)
