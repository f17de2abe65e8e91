"""DeepLabV3 (Chen et al., 2017) and DeepLabV3+ (Chen et al., 2018) on a shared encoder."""

from __future__ import annotations

import torch
import torch.nn as nn

from edgeseg.models import MODELS
from edgeseg.models.encoders import make_encoder, require_output_stride
from edgeseg.models.layers import ASPP, ConvBNReLU, crop_like, pad_input, resize, scaled_rates


class DeepLabV3(nn.Module):
    """Encoder (atrous, output stride 8/16) -> ASPP -> 3×3 conv -> 1×1 classifier -> bilinear upsampling."""

    def __init__(self, num_classes: int, encoder: str, output_stride: int, rates: tuple[int, int, int],
                 channels: int, encoder_weights: str | None, plus: bool, low_level_channels: int = 48) -> None:
        super().__init__()
        self.encoder = make_encoder(encoder, output_stride, encoder_weights)
        self.size_divisor = 32
        self.plus = plus
        self.aspp = ASPP(self.encoder.channels[-1], channels, scaled_rates(rates, output_stride))
        if plus:
            # V3+ decoder: low-level features at stride 4 reduced to 48 channels (the paper's choice, so
            # they do not outweigh the encoder's), concatenated with the upsampled ASPP output, then two
            # 3×3 convs.
            self.low_level = ConvBNReLU(self.encoder.channels[self.encoder.level(4)], low_level_channels, 1)
            self.decoder = nn.Sequential(ConvBNReLU(channels + low_level_channels, channels, 3),
                                         ConvBNReLU(channels, channels, 3))
        else:
            self.decoder = ConvBNReLU(channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image, x = x, pad_input(x, self.size_divisor)
        feats = self.encoder(x)
        y = self.aspp(feats[-1])
        if self.plus:
            low = self.low_level(feats[self.encoder.level(4)])
            y = torch.cat([resize(y, low.shape[-2:]), low], dim=1)
        return crop_like(resize(self.classifier(self.decoder(y)), x.shape[-2:]), image)


@MODELS.register("deeplabv3")
def deeplabv3(num_classes: int, encoder: str = "mobilenet_v3_large", output_stride: int = 16,
              rates: tuple[int, int, int] = (6, 12, 18), channels: int = 256,
              encoder_weights: str | None = None) -> nn.Module:
    """DeepLabV3: atrous encoder + ASPP (1x1, three atrous 3x3, image pooling)."""
    require_output_stride("deeplabv3", output_stride, (8, 16), "atrous convolution is its point")
    return DeepLabV3(num_classes, encoder, output_stride, tuple(rates), channels, encoder_weights, plus=False)


@MODELS.register("deeplabv3plus")
def deeplabv3plus(num_classes: int, encoder: str = "mobilenet_v3_large", output_stride: int = 16,
                  rates: tuple[int, int, int] = (6, 12, 18), channels: int = 256,
                  encoder_weights: str | None = None) -> nn.Module:
    """DeepLabV3+: ASPP plus a decoder fusing stride-4 low-level features."""
    require_output_stride("deeplabv3plus", output_stride, (8, 16), "atrous convolution is its point")
    return DeepLabV3(num_classes, encoder, output_stride, tuple(rates), channels, encoder_weights, plus=True)
