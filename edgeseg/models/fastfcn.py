"""FastFCN (Wu et al., 2019): Joint Pyramid Upsampling instead of a dilated backbone.

The encoder runs at output stride 32 (cheap); JPU takes its stride-8, -16 and -32 features, brings each
to ``width`` channels with a 3×3 conv, upsamples them to stride 8, concatenates them and extracts
multi-scale context with four parallel separable convolutions at dilations 1, 2, 4 and 8. A head
predicts classes at stride 8: ``fcn`` (3×3 conv + dropout + 1×1, the paper's FCN variant) or ``aspp``
(the paper's JPU + ASPP variant). ``width`` is 512 in the paper; 128 by default here for phones.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from edgeseg.core.errors import UsageError
from edgeseg.models import MODELS
from edgeseg.models.encoders import make_encoder
from edgeseg.models.layers import ASPP, ConvBNReLU, SeparableConv, crop_like, pad_input, resize


class JPU(nn.Module):
    def __init__(self, in_channels: list[int], width: int, dilations: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.convs = nn.ModuleList([ConvBNReLU(c, width, 3) for c in in_channels])
        self.dilated = nn.ModuleList([SeparableConv(width * len(in_channels), width, d) for d in dilations])
        self.out_channels = width * len(dilations)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        f = [conv(x) for conv, x in zip(self.convs, feats)]
        size = f[0].shape[-2:]
        cat = torch.cat([f[0]] + [resize(x, size) for x in f[1:]], dim=1)
        return torch.cat([d(cat) for d in self.dilated], dim=1)


class FastFCN(nn.Module):
    def __init__(self, num_classes: int, encoder: str, width: int, head: str, encoder_weights: str | None) -> None:
        super().__init__()
        self.encoder = make_encoder(encoder, 32, encoder_weights)
        self.size_divisor = 32
        idx = [self.encoder.level(s) for s in (8, 16, 32)]
        self.idx = idx
        self.jpu = JPU([self.encoder.channels[i] for i in idx], width)
        if head == "fcn":
            self.head = nn.Sequential(ConvBNReLU(self.jpu.out_channels, width, 3), nn.Dropout(0.1),
                                      nn.Conv2d(width, num_classes, 1))
        else:
            self.head = nn.Sequential(ASPP(self.jpu.out_channels, width, (12, 24, 36)),
                                      nn.Conv2d(width, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image, x = x, pad_input(x, self.size_divisor)
        feats = self.encoder(x)
        y = self.jpu([feats[i] for i in self.idx])
        return crop_like(resize(self.head(y), x.shape[-2:]), image)


@MODELS.register("fastfcn")
def fastfcn(num_classes: int, encoder: str = "resnet18", width: int = 128, head: str = "fcn",
            encoder_weights: str | None = None) -> nn.Module:
    """FastFCN: stride-32 encoder + Joint Pyramid Upsampling + FCN (or ASPP) head."""
    if head not in ("fcn", "aspp"):
        raise UsageError(f"fastfcn head must be 'fcn' or 'aspp', not '{head}'")
    return FastFCN(num_classes, encoder, width, head, encoder_weights)
