"""The training step every task shares: the learning-rate schedule and one optimizer step over micro-batches.

A task says how a batch becomes a loss (``loss_of``: the semantic loop's criterion on the logits, Mask R-CNN's
own loss dictionary summed); the step owns what must be the same everywhere and is easy to get wrong on a GPU:
autocast only where an AMP dtype was chosen (CUDA), the gradient scaler, gradients synchronized on the last
micro-batch only (DDP's ``no_sync``), and clipping after unscaling.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ContextManager, Iterable, Sequence

import torch


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_steps``, then ``cosine`` or ``poly`` (0.9) decay to 0 at ``total_steps``."""
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        t = min(max(t, 0.0), 1.0)
        return 0.5 * (1 + math.cos(math.pi * t)) if schedule == "cosine" else (1 - t) ** 0.9

    return f


def optimizer_step(group: Sequence[Any], loss_of: Callable[[Any], torch.Tensor], opt, scaler,
                   params: Iterable[torch.nn.Parameter], device: torch.device, amp_dtype: torch.dtype | None,
                   clip_grad: float | None, no_sync: Callable[[int], ContextManager] | None = None) -> float:
    """Forward/backward over ``group``'s micro-batches (each loss divided by their number; ``no_sync(j)`` wraps
    all but the last, so gradients are synchronized once), then one optimizer step with optional gradient-norm
    clipping. Returns the summed loss (the mean over micro-batches)."""
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for j, batch in enumerate(group):
        sync = no_sync(j) if no_sync is not None and j < len(group) - 1 else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = loss_of(batch) / len(group)
            scaler.scale(loss).backward()
        total += float(loss.detach())
    if clip_grad is not None:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    scaler.step(opt)
    scaler.update()
    return total
