"""Shared encoders: torchvision MobileNetV2, MobileNetV3-Large/Small, ResNet-18/50 as feature pyramids.

An :class:`Encoder` returns one feature map per level, shallow to deep, at nominal strides
2, 4, 8, 16, 32. With ``output_stride`` 16 or 8 the deepest levels keep that resolution: their
stride-2 convolutions become stride 1 and every later k×k convolution is dilated (atrous) by the
accumulated factor, as DeepLab does. This works on any torchvision block (BasicBlock included, whose
constructor refuses dilation) because it edits the built convolutions, not the constructors.

Weights: ``None`` (random init, the default), ``"imagenet"`` (torchvision's download; online only), or
a path to a local ``.pth`` state dict of the torchvision classifier (read with ``weights_only=True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.core.errors import CheckpointError, UsageError
from edgeseg.core.registry import check_choice


def _mobilenet(builder: str, last: int | None) -> Callable[[], tuple[nn.Module, list[nn.Module]]]:
    def make() -> tuple[nn.Module, list[nn.Module]]:
        import torchvision.models as tvm

        net = getattr(tvm, builder)(weights=None)
        feats = list(net.features)
        return net, feats[:last] if last else feats

    return make


def _resnet(builder: str) -> Callable[[], tuple[nn.Module, list[nn.Module]]]:
    def make() -> tuple[nn.Module, list[nn.Module]]:
        import torchvision.models as tvm

        net = getattr(tvm, builder)(weights=None)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        blocks: list[nn.Module] = [stem, ZeroPadMaxPool()]
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            blocks.extend(layer)
        return net, blocks

    return make


class ZeroPadMaxPool(nn.Module):
    """ResNet's ``MaxPool2d(3, stride=2, padding=1)`` with the padding made explicit as zeros.

    Export-safe adaptation: a padded max-pool becomes PADV2 with a -inf fill in TFLite, which the
    full-int8 kernels (builtin and XNNPACK) fail to prepare. The stem ends in ReLU, so its output is
    >= 0 and zero padding gives exactly the same maxima as -inf padding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The zero border is concatenated rather than F.pad-ed: onnx2tf 1.28 applied the ONNX Pad's NCHW
        # pads to the wrong axes of its NHWC tensors (batch 1 became 3), while Concat along H and W is
        # converted correctly.
        n, c, h, w = (int(v) for v in x.shape)
        zr = x.new_zeros(n, c, 1, w)
        x = torch.cat([zr, x, zr], dim=2)
        zc = x.new_zeros(n, c, h + 2, 1)
        x = torch.cat([zc, x, zc], dim=3)
        return F.max_pool2d(x, kernel_size=3, stride=2)


# name -> (builder, torchvision weights enum name). MobileNetV2 stops at its 320-channel block (index 17):
# the final 1x1 conv to 1280 channels serves classification and would triple the head's input.
ENCODERS: dict[str, tuple[Callable[[], tuple[nn.Module, list[nn.Module]]], str]] = {
    "mobilenet_v2": (_mobilenet("mobilenet_v2", 18), "MobileNet_V2_Weights"),
    "mobilenet_v3_large": (_mobilenet("mobilenet_v3_large", None), "MobileNet_V3_Large_Weights"),
    "mobilenet_v3_small": (_mobilenet("mobilenet_v3_small", None), "MobileNet_V3_Small_Weights"),
    "resnet18": (_resnet("resnet18"), "ResNet18_Weights"),
    "resnet50": (_resnet("resnet50"), "ResNet50_Weights"),
}
OUTPUT_STRIDES = (8, 16, 32)


def _load_weights(net: nn.Module, name: str, weights: str) -> None:
    if weights == "imagenet":
        import torchvision.models as tvm

        state = getattr(tvm, ENCODERS[name][1]).DEFAULT.get_state_dict(progress=True)
    else:
        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(f"encoder weights '{path}' do not exist; give a local .pth file or 'imagenet'")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad or unsafe file
            raise CheckpointError(f"encoder weights '{path}' cannot be read safely ({str(e)[:200]})") from None
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"encoder weights '{weights}' do not fit {name}: {str(e).splitlines()[1:2]}") from None


def _dilate(block: nn.Module, rate: int, remove_stride: bool) -> None:
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            if remove_stride and m.stride != (1, 1):
                m.stride = (1, 1)
            k = m.kernel_size[0]
            if k > 1:
                m.dilation = (rate, rate)
                m.padding = (rate * (k - 1) // 2, rate * (k - 1) // 2)


class Encoder(nn.Module):
    """Feature pyramid of a torchvision backbone.

    Attributes:
        channels: channels of each returned level, shallow to deep.
        strides: effective stride of each level (capped at ``output_stride``).
    """

    def __init__(self, name: str, output_stride: int = 32, weights: str | None = None) -> None:
        super().__init__()
        check_choice(name, list(ENCODERS), "encoder")
        if output_stride not in OUTPUT_STRIDES:
            raise UsageError(f"output_stride={output_stride} is not possible; choose 8, 16 or 32")
        net, blocks = ENCODERS[name][0]()
        if weights:
            _load_weights(net, name, weights)
        self.name, self.output_stride = name, output_stride
        # Find where each stride ends with a probe pass (works for every torchvision block type).
        ends: dict[int, int] = {}
        chans: dict[int, int] = {}
        with torch.no_grad():
            x = torch.zeros(1, 3, 64, 64)
            for i, b in enumerate(blocks):
                b.eval()
                x = b(x)
                s = 64 // x.shape[-1]
                ends[s], chans[s] = i, x.shape[1]
        # Atrous conversion of every block past output_stride.
        rate, stride = 1, 1
        for i, b in enumerate(blocks):
            level = next(s for s in sorted(ends) if ends[s] >= i)
            if level > stride:  # this block downsamples
                if level > output_stride:
                    rate *= 2
                    _dilate(b, rate, remove_stride=True)
                    continue
                stride = level
            elif rate > 1:
                _dilate(b, rate, remove_stride=False)
        self.blocks = nn.ModuleList(blocks)
        self.levels = sorted(ends)            # nominal strides, e.g. [2, 4, 8, 16, 32]
        self.ends = [ends[s] for s in self.levels]
        self.channels = [chans[s] for s in self.levels]
        self.strides = [min(s, output_stride) for s in self.levels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        j = 0
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i == self.ends[j]:
                out.append(x)
                j += 1
        return out

    def level(self, nominal_stride: int) -> int:
        """Index of the level with this nominal stride (2, 4, 8, 16, 32)."""
        return self.levels.index(nominal_stride)


def make_encoder(name: str, output_stride: int = 32, weights: str | None = None) -> Encoder:
    return Encoder(name, output_stride, weights)


def require_output_stride(model: str, output_stride: int, allowed: tuple[int, ...], why: str) -> None:
    """A clear error for an output stride that makes no sense for an architecture."""
    if output_stride not in allowed:
        raise UsageError(f"{model} takes output_stride {' or '.join(map(str, allowed))}, not {output_stride}: {why}")
