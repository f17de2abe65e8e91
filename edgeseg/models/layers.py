"""Layers shared by the architectures, with the export decisions they embody.

Resizing: always ``F.interpolate(mode="bilinear", align_corners=False)`` to an explicit static size.
TFLite's RESIZE_BILINEAR implements it as ``half_pixel_centers=True`` and Core ML as
``upsample_bilinear``/``resize_bilinear`` with the same sampling; ``align_corners=True`` (used by some
papers' code) converts too but is slower on XNNPACK and has had off-by-half-pixel bugs in converters.
Sizes come from tensor shapes, which are static once the input shape is fixed for export.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    # Under symbolic torch.fx tracing (coremltools.optimize.torch's quantizer) ``_static_resize`` is one leaf
    # call (torch.fx.wrap below), which runs with real shapes, hence constant sizes, when the quantized graph
    # is later traced for Core ML. It is looked up in this module's globals, which is where fx patches it.
    return _static_resize(x, size)


def _static_resize(x: torch.Tensor, size) -> torch.Tensor:
    # int(): the target size becomes a constant in traced graphs (ONNX Resize with constant sizes)
    # instead of a Shape->Gather->Concat chain; onnx2tf mis-lays-out such chains in some graphs, and
    # exported models have static shapes anyway.
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


torch.fx.wrap("_static_resize")


def pad_input(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """``x`` zero-padded at the bottom and right to sides that are multiples of ``divisor`` (the
    architecture's total stride), so any input size works: ``360x480`` runs as ``384x480`` inside the
    graph and :func:`crop_like` cuts the output back. A no-op, and no op in exported graphs, when the
    sides already divide. Zero is the normalized mean colour."""
    return _pad_input(x, divisor)


def _pad_input(x: torch.Tensor, divisor: int) -> torch.Tensor:
    ph, pw = -int(x.shape[-2]) % int(divisor), -int(x.shape[-1]) % int(divisor)
    if not (ph or pw):
        return x
    if torch.onnx.is_in_onnx_export():
        # TorchScript's ONNX Pad takes its pads from a ConstantOfShape/Slice/Transpose chain that onnx2tf 1.28
        # lays out as NHWC (it then pads H but not W); zeros of a constant shape concatenated convert exactly.
        # The ONNX export has a fixed input shape, so int() of the batch is that constant.
        n, c, h, w = (int(v) for v in x.shape)
        if pw:
            x = torch.cat([x, x.new_zeros((n, c, h, pw))], dim=3)
        if ph:
            x = torch.cat([x, x.new_zeros((n, c, ph, w + pw))], dim=2)
        return x
    return F.pad(x, (0, pw, 0, ph))


def crop_like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y`` cut to the height and width of ``x`` (undoes :func:`pad_input`)."""
    return _crop_like(y, x)


def _crop_like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if tuple(y.shape[-2:]) == (h, w):
        return y
    if torch.onnx.is_in_onnx_export():
        # onnx2tf 2.6 cuts an NCHW Slice on H/W on the wrong NHWC axes (a [1,5,40,5] output for [1,40,56,5]);
        # the same crop on an NHWC view converts exactly, and its transposes cancel against the graph's own
        return y.permute(0, 2, 3, 1)[:, :h, :w].permute(0, 3, 1, 2)
    return y[:, :, :h, :w]


# leaves under symbolic tracing, like _static_resize: they run with real shapes later
torch.fx.wrap("_pad_input")
torch.fx.wrap("_crop_like")


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, dilation: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, padding=dilation * (k - 1) // 2, dilation=dilation,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SeparableConv(nn.Sequential):
    """Depthwise k×k (dilated) + BN, then pointwise 1×1 + BN + ReLU (FastFCN's JPU, DeepLabV3+ decoders)."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
                         nn.BatchNorm2d(cin),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (Chen et al., DeepLabV3): a 1×1 conv, three 3×3 atrous convs and
    image-level pooling, concatenated and projected by a 1×1 conv.

    Image pooling uses ``AdaptiveAvgPool2d(1)`` (ONNX GlobalAveragePool -> TFLite MEAN, Core ML
    reduce_mean) and is broadcast back with a bilinear resize from 1×1, which every target supports.
    ``extra`` channels (Gated-SCNN's edge branch) may be concatenated before the projection.
    """

    def __init__(self, cin: int, cout: int, rates: tuple[int, int, int] = (6, 12, 18), extra: int = 0,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.branches = nn.ModuleList([ConvBNReLU(cin, cout, 1)] + [ConvBNReLU(cin, cout, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
                                  nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.project = nn.Sequential(ConvBNReLU(cout * (len(rates) + 2) + extra, cout, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        outs = [b(x) for b in self.branches] + [resize(self.pool(x), x.shape[-2:])]
        if extra is not None:
            outs.append(extra)
        return self.project(torch.cat(outs, dim=1))


def scaled_rates(rates: tuple[int, int, int], output_stride: int) -> tuple[int, int, int]:
    """DeepLab's rates are given for output stride 16; at 8 they double, at 32 they halve (min 1)."""
    f = 16 / output_stride
    return tuple(max(1, int(round(r * f))) for r in rates)  # type: ignore[return-value]
