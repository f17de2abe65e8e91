"""Mask R-CNN training and batch prediction, device-agnostic: the epoch loop over instance batches, with the shared
training step (:mod:`edgeseg.train.step`: schedule, AMP only on CUDA, gradient scaler, clipping)."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from edgeseg.core.errors import DataError


def to_tensors(img: np.ndarray, target: dict[str, np.ndarray] | None, device) -> tuple[Any, dict | None]:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0).to(device)
    if target is None:
        return x, None
    return x, {"boxes": torch.as_tensor(target["boxes"], dtype=torch.float32, device=device),
               "labels": torch.as_tensor(target["labels"], dtype=torch.int64, device=device),
               "masks": torch.as_tensor(target["masks"], dtype=torch.uint8, device=device)}


def usable_indices(dataset, num_classes: int) -> tuple[list[int], dict[str, int]]:
    """Samples with at least one instance; the rest counted by reason. A class id outside the category map is a
    named error (training on it would index past the classifier)."""
    keep, skipped = [], {"no_instances": 0}
    for i in range(len(dataset)):
        _, t = dataset.instances(i)
        labels = np.asarray(t["labels"])
        if labels.size == 0:
            skipped["no_instances"] += 1
            continue
        bad = labels[(labels < 1) | (labels >= num_classes)]
        if bad.size:
            name = dataset.name(i) if hasattr(dataset, "name") else f"sample {i}"
            raise DataError(f"{name}: class id {int(bad[0])} is outside the category map (1..{num_classes - 1})")
        keep.append(i)
    return keep, skipped


def train_instance(model, dataset, epochs: int = 1, batch_size: int = 4, lr: float = 0.01, seed: int = 0,
                   max_steps: int | None = None, clip_grad: float | None = 10.0,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """SGD (momentum 0.9, weight decay 1e-4, linear warm-up then cosine) on ``dataset.instances``; returns the
    per-step losses and the skipped-sample counts. ``clip_grad``: the gradients' global norm is clipped to it
    (a backbone transferred from a segmentation run starts with mask losses near 40 and gradient norms near
    9,000 on fresh heads: unclipped, the second step overflows)."""
    import torch

    from edgeseg.core.device import pick_device
    from edgeseg.train.step import lr_lambda, optimizer_step

    device = pick_device("auto")
    num_classes = model.roi_heads.box_predictor.cls_score.out_features
    keep, skipped = usable_indices(dataset, num_classes)
    if not keep:
        raise DataError("no training image has an instance; Mask R-CNN has nothing to learn from")
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    per_epoch = math.ceil(len(keep) / batch_size)
    total = min(epochs * per_epoch, max_steps or epochs * per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, min(50, total // 5 + 1), "cosine"))
    amp_dtype = torch.float16 if device.type == "cuda" else None  # AMP only on CUDA
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is not None)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    parts: dict[str, Any] = {}

    def loss_of(indices) -> Any:
        """torchvision's own loss dictionary of one batch, summed (the parts kept for the log)."""
        xs, ts = zip(*(to_tensors(*dataset.instances(i), device) for i in indices))
        parts.clear()
        parts.update(model(list(xs), list(ts)))
        return sum(parts.values())

    step = 0
    while step < total:
        order = [keep[int(i)] for i in torch.randperm(len(keep), generator=gen)]
        for b in range(0, len(order), batch_size):
            if step >= total:
                break
            loss = optimizer_step([order[b : b + batch_size]], loss_of, opt, scaler, params, device, amp_dtype,
                                  clip_grad)
            if not math.isfinite(loss):
                raise FloatingPointError(f"Mask R-CNN loss became {loss} at step {step}; lower the learning rate")
            sched.step()
            losses.append(loss)
            step += 1
            if step % max(1, total // 10) == 0:
                log(f"step {step}/{total}: loss {losses[-1]:.4f} "
                    + " ".join(f"{k.removeprefix('loss_')} {float(v.detach()):.3f}" for k, v in parts.items()))
    return {"losses": losses, "skipped": skipped, "steps": step, "images": len(keep)}


def predict(model, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Eval-mode predictions (torchvision's post-processing) as numpy: boxes, labels, scores, masks [D,1,H,W]."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for img in images:
            x, _ = to_tensors(img, None, device)
            p = model([x])[0]
            out.append({k: v.cpu().numpy() for k, v in p.items()})
    return out
