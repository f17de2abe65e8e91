"""The training state every task checkpoints, in a form ``torch.load(weights_only=True)`` accepts (tensors, lists):
random-number-generator states, the optimizer/scheduler/grad-scaler states, and weights as CPU tensors."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    out: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(s: dict[str, Any]) -> None:
    version, state, gauss = s["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])


def optimizer_state(opt, sched, scaler) -> dict[str, Any]:
    """What an exact resume needs besides the weights and the loop's counters: optimizer, scheduler, grad scaler
    and every generator's state."""
    return {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "rng": capture_rng()}


def restore_optimizer_state(state: dict[str, Any], opt, sched, scaler) -> None:
    """The inverse of :func:`optimizer_state` (an older semantic checkpoint may lack the scaler and keep only the
    torch generator, as ``torch_rng``)."""
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    if "rng" in state:
        restore_rng(state["rng"])
    elif "torch_rng" in state:  # an epoch-end checkpoint of edgeseg before step checkpoints
        torch.set_rng_state(state["torch_rng"])


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict as contiguous CPU copies (what a checkpoint stores, whatever the training device)."""
    return {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone()
            for k, v in module.state_dict().items()}
