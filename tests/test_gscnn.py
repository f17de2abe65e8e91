"""Gated-SCNN's pieces against hand-computed values."""

import pytest
import torch

from edgeseg.core.errors import UsageError
from edgeseg.losses import parse_loss
from edgeseg.losses.dual_task import boundaries
from edgeseg.models import build_model
from edgeseg.models.gscnn import GatedConv, Sobel
from edgeseg.train.loop import build_criterion


def test_boundaries_of_a_two_class_mask():
    t = torch.zeros(1, 4, 6, dtype=torch.long)
    t[:, :, 3:] = 1
    t[0, 0, 0] = 255
    edge, valid = boundaries(t, 255)
    # columns 2 and 3 touch the class change; the ignored pixel is not valid
    assert edge[0, 1].tolist() == [0, 0, 1, 1, 0, 0]
    assert valid[0, 0, 0] == 0 and valid.sum() == 23


def test_sobel_magnitude_of_a_vertical_step():
    s = Sobel()
    x = torch.zeros(1, 3, 5, 5)
    x[..., 3:] = 1.0  # grey value 1 on the right (weights sum to 1)
    g = s(x)[0, 0]
    # Sobel x response at the step: (1+2+1)/8 = 0.5 in the two columns around it, 0 far away
    assert torch.allclose(g[2, 2:4], torch.tensor([0.5, 0.5]), atol=1e-3)
    assert g[2, 0] < 1e-2


def test_gated_conv_identity_gate():
    gcl = GatedConv(2, 2)
    with torch.no_grad():
        gcl.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    s = torch.ones(1, 2, 3, 3)
    out = gcl.eval()(s, torch.zeros(1, 1, 3, 3))
    # s * (1 + alpha) with alpha in (0, 1)
    assert (out > 1).all() and (out < 2).all()


def test_edge_bce_and_edge_attention_hand_computed():
    t = torch.zeros(1, 8, 8, dtype=torch.long)
    t[:, :, 4:] = 1
    out = {"out": torch.zeros(1, 3, 8, 8), "edge": torch.zeros(1, 1, 8, 8)}  # p = 0.5 everywhere
    # balanced BCE at p=0.5: every pixel costs ln 2, weights pos=neg/total, neg=pos/total, averaged over 64
    edge, _ = boundaries(t, 255)
    pos = edge.sum().item()
    neg = 64 - pos
    expected = (pos * neg / 64 + neg * pos / 64) * torch.log(torch.tensor(2.0)).item() / 64
    assert abs(parse_loss("edge_bce", 3)(out, t).item() - expected) < 1e-5
    # attention: no pixel above p = 0.8 -> 0; edges predicted everywhere -> plain CE over all pixels = ln 3
    assert parse_loss("edge_attention", 3)(out, t).item() == 0
    out["edge"] = torch.full((1, 1, 8, 8), 5.0)
    assert abs(parse_loss("edge_attention", 3)(out, t).item() - torch.log(torch.tensor(3.0)).item()) < 1e-5


def test_dual_task_consistency_is_zero_for_the_ground_truth_and_grows_with_errors():
    t = torch.zeros(1, 16, 16, dtype=torch.long)
    t[:, 4:12, 4:12] = 1
    t[0, 0, :4] = 255
    loss = parse_loss("dual_task", 2).terms[0].loss
    perfect = torch.nn.functional.one_hot(t.clamp(max=1), 2).permute(0, 3, 1, 2).float() * 100
    assert loss(perfect, t).item() < 1e-6
    shifted = torch.roll(perfect, 2, dims=3)
    # classes swapped: the same boundaries, so the consistency term stays 0 (where nothing is ignored)
    t_full = t.clamp(max=1)
    assert loss(perfect.flip(1), t_full).item() < 1e-6
    assert loss(shifted, t).item() > 0.05


def test_gscnn_adds_its_terms_unless_the_spec_names_them():
    m = build_model("gscnn", 3, encoder="mobilenet_v2", channels=16)
    assert build_criterion("ce", m, 3).spec == "ce + edge_bce + edge_attention + dual_task"
    assert build_criterion("ce + 5*edge_bce", m, 3).spec == "ce + 5*edge_bce"
    with pytest.raises(UsageError, match="'edge_bce' needs the model's 'edge' output, which this model does not "
                                         "produce in training \\(only gscnn does\\)"):
        build_criterion("ce + edge_bce", build_model("unet", 3, base=8, depth=2), 3)
    m.train()
    out = m(torch.randn(2, 3, 64, 64))
    y = torch.randint(0, 3, (2, 64, 64))
    total = build_criterion("ce", m, 3)(out, y)
    total.backward()
    assert torch.isfinite(total) and m.classifier.weight.grad.abs().sum() > 0
