"""Multiply-accumulate count of convolutions and linear layers, from one forward pass with hooks."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of Conv2d, ConvTranspose2d and Linear layers for input ``x`` (elementwise ops excluded)."""
    total = 0

    def conv(m: nn.Conv2d, inp, out) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() * k

    def tconv(m: nn.ConvTranspose2d, inp, out) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.out_channels // m.groups)
        total += inp[0].numel() * k

    def linear(m: nn.Linear, inp, out) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(tconv))
        elif isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return int(total)
