"""Which torch device a command runs on: CUDA when there is one (``auto``), else the CPU; a named device that
this machine lacks is a usage error naming the flag."""

from __future__ import annotations

import torch

from edgeseg.core.errors import UsageError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device '{name}' is not a device; use auto, cpu or cuda[:N]") from None
