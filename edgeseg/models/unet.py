"""U-Net (Ronneberger et al., 2015).

Per level: two 3x3 convolutions + ReLU (BatchNorm optional); 2x2 max-pool (stride 2) down;
2x2 up-convolution (transposed conv, or bilinear upsampling + 1x1 conv) up, concatenated with the
skip connection of the same level; a final 1x1 conv to the class scores.

Adaptation for mobile runtimes: convolutions are zero-padded ("same") instead of the paper's
unpadded ones, so the output has the input's size and no cropping of skips is needed; input sides
must be divisible by ``2 ** depth``.

With ``encoder=`` (e.g. ``resnet18``) the contracting path is a pretrained-capable backbone: the
expanding path upsamples from its stride-32 features and concatenates its stride-16, 8, 4 and 2
features as skips, then one more up step restores the input size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.core.errors import UsageError
from edgeseg.models import MODELS
from edgeseg.models.layers import crop_like, pad_input


def _double_conv(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in in (cin, cout):
        layers.append(nn.Conv2d(c_in, cout, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net with configurable width (``base`` channels at level 0) and ``depth`` pooling steps."""

    def __init__(self, num_classes: int, in_channels: int = 3, base: int = 32, depth: int = 4,
                 batch_norm: bool = True, up: str = "transpose") -> None:
        super().__init__()
        if up not in ("transpose", "bilinear"):
            raise ValueError(f"up must be 'transpose' or 'bilinear', not {up!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.size_divisor = 2**depth
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(in_channels, widths[0], batch_norm)])
        for i in range(depth):
            self.down.append(_double_conv(widths[i], widths[i + 1], batch_norm))
        self.up = nn.ModuleList([_UpSkip(widths[i + 1], widths[i], widths[i], up, batch_norm)
                                 for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image, x = x, pad_input(x, self.size_divisor)
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                # stride given explicitly: torch.export -> coremltools needs it (STACK.md)
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            x = block(x, skips.pop())
        return crop_like(self.head(x), image)


class EncoderUNet(nn.Module):
    """U-Net expanding path over a backbone's feature pyramid (strides 32 -> 16 -> 8 -> 4 -> 2 -> 1)."""

    def __init__(self, num_classes: int, encoder: str, base: int, batch_norm: bool, up: str,
                 encoder_weights: str | None) -> None:
        super().__init__()
        from edgeseg.models.encoders import make_encoder

        self.encoder = make_encoder(encoder, 32, encoder_weights)
        self.size_divisor = 32
        ch = self.encoder.channels  # strides 2, 4, 8, 16, 32
        widths = [base * 2**i for i in range(4, -1, -1)]  # e.g. 256, 128, 64, 32, 16
        ups, cin = [], ch[-1]
        for skip_ch, w in zip(list(reversed(ch[:-1])) + [0], widths):
            ups.append(_UpSkip(cin, skip_ch, w, up, batch_norm))
            cin = w
        self.up = nn.ModuleList(ups)
        self.head = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image, x = x, pad_input(x, self.size_divisor)
        feats = self.encoder(x)
        y = feats[-1]
        skips = list(reversed(feats[:-1])) + [None]
        for block, skip in zip(self.up, skips):
            y = block(y, skip)
        return crop_like(self.head(y), image)


class _UpSkip(nn.Module):
    """2x up (2x2 up-convolution, or bilinear + 1x1 conv), concatenate the skip (if any), two 3x3 convs."""

    def __init__(self, cin: int, skip: int, cout: int, mode: str, batch_norm: bool) -> None:
        super().__init__()
        if mode == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        else:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(cin, cout, 1))
        self.conv = _double_conv(cout + skip, cout, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        return self.conv(x if skip is None else torch.cat([x, skip], dim=1))


@MODELS.register("unet")
def unet(num_classes: int, base: int = 32, depth: int = 4, batch_norm: bool = True,
         up: str = "transpose", encoder: str | None = None, encoder_weights: str | None = None) -> nn.Module:
    """U-Net: two 3x3 convs per level, 2x2 max-pool down, up-convolution + skip concat up."""
    if up not in ("transpose", "bilinear"):
        raise UsageError(f"unet up must be 'transpose' or 'bilinear', not '{up}'")
    if encoder is None:
        if encoder_weights:
            raise UsageError("unet: encoder_weights needs encoder= (the classic U-Net has no backbone)")
        if not 1 <= depth <= 6:
            raise UsageError(f"unet depth must be 1 to 6, not {depth}")
        return UNet(num_classes, base=base, depth=depth, batch_norm=batch_norm, up=up)
    return EncoderUNet(num_classes, encoder, base, batch_norm, up, encoder_weights)
