"""Cross-layer equalization: which pairs it may touch, that the float model is unchanged, and the ranges each rule
promises (hand-computed), plus what it does to a per-tensor int8 activation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.quantize.equalize import MAX_STRETCH, activation_ranges, equalize, find_pairs
from edgeseg.core.errors import UsageError


class Net(nn.Module):
    """a -BN-ReLU-> dw (depthwise pair); dw -BN-maxpool-> pw (regular pair); then the steps no pair may cross:
    hard-swish, ReLU6, a tensor with two consumers (residual), a grouped consumer, a module called twice."""

    def __init__(self):
        super().__init__()
        self.a, self.bn_a, self.relu_a = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.dw, self.bn_dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)
        self.pw, self.hs = nn.Conv2d(8, 16, 1), nn.Hardswish()
        self.c1, self.relu6 = nn.Conv2d(16, 16, 1), nn.ReLU6()
        self.c2, self.c3 = nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 1)
        self.h, self.relu_h, self.g = nn.Conv2d(16, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=2)
        self.shared, self.head = nn.Conv2d(16, 16, 1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.dw(self.relu_a(self.bn_a(self.a(x))))
        x = self.pw(F.max_pool2d(self.bn_dw(x), 2))
        x = self.c2(self.relu6(self.c1(self.hs(x))))
        x = x + self.c3(x)
        x = self.g(self.relu_h(self.h(x)))
        x = self.shared(torch.relu(self.shared(x)))
        return self.head(x)


def _net(seed=0):
    torch.manual_seed(seed)
    net = Net()
    for m in net.modules():  # trained-looking BatchNorms: the folded ranges differ per channel
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.1, 4)
            m.weight.data.uniform_(0.1, 3)
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def _images(n=4, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((2, 3, 16, 16)).astype(np.float32) for _ in range(n)]


def test_pairs_only_through_positively_homogeneous_single_consumer_steps():
    pairs = find_pairs(_net())
    assert [(p.producer, p.norm, p.consumer, p.depthwise, p.through) for p in pairs] == [
        ("a", "bn_a", "dw", True, ["relu_a"]),
        ("dw", "bn_dw", "pw", False, ["max_pool2d"]),
    ]


@pytest.mark.parametrize("mode", ["weights", "activations"])
def test_equalization_leaves_the_float_model_unchanged(mode):
    net, images = _net(), _images()
    ref = copy.deepcopy(net)
    eq = equalize(net, mode, images)
    assert len(eq.pairs) == 2 and all(p.scales is not None and (p.scales != 1).any() for p in eq.pairs)
    x = torch.from_numpy(_images(1, seed=7)[0])
    with torch.no_grad():
        a, b = ref(x), net(x)
    # float32 rounding of a rescaled product: relative 1e-5 of the output range is ~100x the error seen (~3e-7)
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())
    assert eq.float_deviation <= 1e-5
    assert set(ref.state_dict()) == set(net.state_dict())  # same structure: every exporter takes it unchanged


def test_weights_rule_equalizes_folded_ranges_of_each_pair():
    net = _net()
    equalize(net, "weights", _images(1))
    fold = net.bn_a.weight.detach().abs() / torch.sqrt(net.bn_a.running_var + net.bn_a.eps)
    r_a = net.a.weight.detach().flatten(1).abs().amax(1) * fold  # what the converters quantize
    r_dw_in = net.dw.weight.detach().flatten(1).abs().amax(1)
    torch.testing.assert_close(r_a, r_dw_in, rtol=1e-3, atol=0)
    fold_dw = net.bn_dw.weight.detach().abs() / torch.sqrt(net.bn_dw.running_var + net.bn_dw.eps)
    r_dw_out = net.dw.weight.detach().flatten(1).abs().amax(1) * fold_dw
    r_pw_in = net.pw.weight.detach().abs().transpose(0, 1).flatten(1).amax(1)
    torch.testing.assert_close(r_dw_out, r_pw_in, rtol=1e-3, atol=0)  # the chain a -> dw -> pw settled


def test_activations_rule_stretches_every_channel_into_a_depthwise_consumer():
    net, images = _net(), _images()
    with torch.no_grad():
        net.bn_a.weight[3] *= 1e-4  # a channel far below the tensor's range
        net.bn_a.bias[3] *= 1e-4
    pairs = find_pairs(net)
    before = activation_ranges(net, pairs, images)["dw"]
    equalize(net, "activations", images)
    after = activation_ranges(net, find_pairs(net), images)["dw"]
    top = before.max()
    # hand-computed: s_i = max(a_i / max a, 1/64) and the new range is a_i / s_i
    expected = before / torch.clamp(before / top, min=1 / MAX_STRETCH)
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=0)
    assert float(before[3] / top) < 1 / MAX_STRETCH and float(after[3]) == pytest.approx(float(before[3]) * 64,
                                                                                          rel=1e-4)
    assert torch.all(after[before / top >= 1 / MAX_STRETCH] >= top * (1 - 1e-4))


def test_activations_rule_cuts_the_error_of_a_per_tensor_int8_activation():
    """The activation a -> dw quantized per tensor (uint8 after ReLU, step = range / 255): the error it leaves in
    dw's output channels whose input spans 1/20 of the tensor's range. Equalization scales that input up by 20 and
    dw's weights down by 20, so the same step costs those outputs 1/20 of the error (>= 5x asserted: rounding)."""
    net, images = _net(), _images()
    with torch.no_grad():
        net.bn_a.weight[:4] *= 0.05
        net.bn_a.bias[:4] *= 0.05
    eqd = copy.deepcopy(net)
    equalize(eqd, "activations", images)
    x = torch.from_numpy(np.concatenate(images))

    def dw_error(model):
        top = float(activation_ranges(model, find_pairs(model), images)["dw"].max())
        with torch.no_grad():
            y = model.relu_a(model.bn_a(model.a(x)))
            exact = model.dw(y)
            quant = model.dw(torch.fake_quantize_per_tensor_affine(y, top / 255, 0, 0, 255))
        return (quant - exact).abs().mean(dim=(0, 2, 3))

    before, after = dw_error(net), dw_error(eqd)
    assert float(after[:4].mean()) < 0.2 * float(before[:4].mean()), (before, after)
    assert float(after[4:].mean()) <= 1.1 * float(before[4:].mean())  # the others keep their resolution


def test_untraceable_models_are_named():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.c(x) if x.sum() > 0 else x

    with pytest.raises(UsageError, match=r"--equalize: Branchy cannot be traced by torch.fx"):
        equalize(Branchy(), "weights", _images(1))
    with pytest.raises(UsageError, match=r"--equalize.*did you mean 'weights'"):
        equalize(_net(), "weight", _images(1))
