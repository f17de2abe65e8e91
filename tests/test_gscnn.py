"""Gated-SCNN's pieces against hand-computed values."""

import torch

from edgeseg.models import build_model
from edgeseg.models.gscnn import GatedConv, Sobel, boundaries


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


def test_dual_task_loss_is_balanced_bce_plus_attention():
    torch.manual_seed(0)
    m = build_model("gscnn", 3, encoder="mobilenet_v2", channels=16, edge_weight=1.0, attention_weight=0.0)
    t = torch.zeros(1, 8, 8, dtype=torch.long)
    t[:, :, 4:] = 1
    out = {"out": torch.zeros(1, 3, 8, 8), "edge": torch.zeros(1, 1, 8, 8)}  # p = 0.5 everywhere
    # balanced BCE at p=0.5: every pixel costs ln 2, weights pos=neg/total, neg=pos/total, averaged over 64
    edge, _ = boundaries(t, 255)
    pos = edge.sum().item()
    neg = 64 - pos
    expected = (pos * neg / 64 + neg * pos / 64) * torch.log(torch.tensor(2.0)).item() / 64
    assert abs(m.aux_loss(out, t, 255).item() - expected) < 1e-5
    # attention term: edges predicted everywhere (p > 0.8) -> plain CE over all pixels = ln 3
    m.edge_weight, m.attention_weight = 0.0, 1.0
    out["edge"] = torch.full((1, 1, 8, 8), 5.0)
    assert abs(m.aux_loss(out, t, 255).item() - torch.log(torch.tensor(3.0)).item()) < 1e-5
