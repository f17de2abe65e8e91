"""LR-ASPP on MobileNetV3 (Howard et al., "Searching for MobileNetV3", 2019), from torchvision.

The head combines stride-16 features, gated by a global-pooling sigmoid branch, with a stride-8
low-level classifier. Backbone weights default to None (random init). ``backbone_weights`` takes a
local ``.pth`` state dict of torchvision's ``mobilenet_v3_large`` (loaded with
``weights_only=True``), or ``"imagenet"`` to download torchvision's ImageNet weights (online only).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from edgeseg.errors import CheckpointError
from edgeseg.models import MODELS


class _OutTensor(nn.Module):
    """torchvision segmentation models return ``{"out": logits}``; exporters want a plain tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def load_backbone_weights(backbone: nn.Module, source: str) -> None:
    """Load ImageNet weights into a torchvision MobileNetV3 feature extractor."""
    from torchvision.models import MobileNet_V3_Large_Weights

    if source == "imagenet":
        state = MobileNet_V3_Large_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
    else:
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"backbone weights '{path}' do not exist; give a .pth file or 'imagenet'")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
            raise CheckpointError(f"backbone weights '{path}' cannot be read safely ({e})") from None
    # torchvision's classifier state dict keys are "features.N..."; the segmentation backbone is
    # an IntermediateLayerGetter over those same modules, named "N...".
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    missing, unexpected = backbone.load_state_dict(feats, strict=False)
    if missing:
        raise CheckpointError(
            f"backbone weights '{source}' do not fit mobilenet_v3_large ({len(missing)} missing keys, "
            f"e.g. {missing[0]})"
        )


@MODELS.register("lraspp_mobilenet_v3")
def lraspp_mobilenet_v3(num_classes: int, backbone_weights: str | None = None,
                        inter_channels: int = 128) -> nn.Module:
    """LR-ASPP head on a MobileNetV3-Large backbone (torchvision), output at input size."""
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.segmentation.lraspp import LRASPP
    from torchvision.models._utils import IntermediateLayerGetter

    backbone = mobilenet_v3_large(weights=None, dilated=True).features
    stage_indices = [0] + [i for i, b in enumerate(backbone) if getattr(b, "_is_cn", False)] + [len(backbone) - 1]
    low_pos, high_pos = stage_indices[-4], stage_indices[-1]
    low_channels = backbone[low_pos].out_channels
    high_channels = backbone[high_pos].out_channels
    body = IntermediateLayerGetter(backbone, return_layers={str(low_pos): "low", str(high_pos): "high"})
    if backbone_weights:
        load_backbone_weights(body, backbone_weights)
    return _OutTensor(LRASPP(body, low_channels, high_channels, num_classes, inter_channels))
