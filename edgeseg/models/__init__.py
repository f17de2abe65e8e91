"""Segmentation architectures, registered by name.

``build_model(name, num_classes, **kwargs)`` returns an ``nn.Module`` mapping NCHW float input to
NCHW logits of the input's size. Unset (None) keyword arguments are dropped so each
architecture's own defaults win (as timm's factory does).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch.nn as nn

from edgeseg.core.errors import UsageError
from edgeseg.core.registry import Registry, suggest

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

# Importing the modules registers them.
from edgeseg.models import deeplab as _deeplab  # noqa: E402,F401
from edgeseg.models import fastfcn as _fastfcn  # noqa: E402,F401
from edgeseg.models import gscnn as _gscnn  # noqa: E402,F401
from edgeseg.models import lraspp as _lraspp  # noqa: E402,F401
from edgeseg.models import unet as _unet  # noqa: E402,F401


def model_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments an architecture accepts, with their defaults."""
    sig = inspect.signature(MODELS.get(name))
    return {k: p.default for k, p in sig.parameters.items() if k != "num_classes"}


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered architecture; unknown keyword arguments are a UsageError naming them."""
    builder = MODELS.get(name)
    accepted = model_kwargs(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    for k in kwargs:
        if k not in accepted:
            raise UsageError(
                f"model '{name}' has no option '{k}'{suggest(k, list(accepted))}; "
                f"its options are: {', '.join(accepted) or 'none'}"
            )
    if num_classes < 2:
        raise UsageError(f"num_classes must be at least 2 (background + one class), got {num_classes}")
    return builder(num_classes=num_classes, **kwargs)


def check_input_size(name: str, model: nn.Module, height: int, width: int) -> tuple[int, int]:
    """The size ``model`` runs at inside its graph for a ``height x width`` input.

    Every architecture pads its input to multiples of its total stride (``size_divisor``) and crops the
    output back (:func:`~edgeseg.models.layers.pad_input`), so a 360x480 camera frame needs no stretching;
    the padding costs compute, which the caller reports. A model without that padding refuses sides it
    cannot take, naming the nearest that work.
    """
    d = int(getattr(model, "size_divisor", 1))
    if not (height % d or width % d):
        return height, width
    if getattr(model, "pads_input", True):
        return height + (-height % d), width + (-width % d)

    def near(v: int) -> int:
        return max(d, round(v / d) * d)
    raise UsageError(f"--image-size: model '{name}' needs input sides divisible by {d}, got {height}x{width}; "
                     f"use e.g. {near(height)}x{near(width)}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
