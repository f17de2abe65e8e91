"""LR-ASPP (Howard et al., "Searching for MobileNetV3", 2019) on a MobileNetV3 encoder.

The head (torchvision's ``LRASPPHead`` modules, its forward restated with static-size resizes) gates 1×1-conv features of the last stage (output stride 16,
dilated) with a global-pooling sigmoid branch, upsamples them to stride 8 and adds a classifier over the
stride-8 features. LR-ASPP is defined for MobileNetV3; other encoders are refused.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from edgeseg.models import MODELS
from edgeseg.core.errors import UsageError
from edgeseg.models.encoders import ENCODERS, make_encoder, require_output_stride
from edgeseg.models.layers import crop_like, pad_input, resize
from edgeseg.core.registry import check_choice


class LRASPP(nn.Module):
    def __init__(self, num_classes: int, encoder: str, inter_channels: int, encoder_weights: str | None,
                 output_stride: int) -> None:
        from torchvision.models.segmentation.lraspp import LRASPPHead

        super().__init__()
        self.encoder = make_encoder(encoder, output_stride, encoder_weights)
        self.size_divisor = 32
        self.low = self.encoder.level(8)
        self.head = LRASPPHead(self.encoder.channels[self.low], self.encoder.channels[-1], num_classes,
                               inter_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image, x = x, pad_input(x, self.size_divisor)
        feats = self.encoder(x)
        low, high = feats[self.low], feats[-1]
        h = self.head
        # torchvision's LRASPPHead.forward, with its upsampling through our static-size resize (constant
        # sizes in traced graphs: ONNX/onnx2tf and the quantized Core ML path need them)
        y = resize(h.cbr(high) * h.scale(high), low.shape[-2:])
        return crop_like(resize(h.low_classifier(low) + h.high_classifier(y), x.shape[-2:]), image)


@MODELS.register("lraspp")
def lraspp(num_classes: int, encoder: str = "mobilenet_v3_large", inter_channels: int = 128,
           encoder_weights: str | None = None, output_stride: int = 16) -> nn.Module:
    """LR-ASPP head on MobileNetV3-Large or -Small (output stride 16, as in the paper)."""
    check_choice(encoder, list(ENCODERS), "encoder")
    if not encoder.startswith("mobilenet_v3"):
        raise UsageError(f"lraspp is defined on MobileNetV3: encoder must be mobilenet_v3_large or "
                         f"mobilenet_v3_small, not '{encoder}' (use deeplabv3plus or fastfcn for it)")
    require_output_stride("lraspp", output_stride, (16, 32), "the head fuses stride-8 with the last stage")
    return LRASPP(num_classes, encoder, inter_channels, encoder_weights, output_stride)
