"""Mask R-CNN training and batch prediction, device-agnostic: the shared epoch loop (:mod:`edgeseg.train.epochs`:
resume, step checkpoints, history, best, early stop) and step (:mod:`edgeseg.train.step`: schedule, AMP only on
CUDA, gradient scaler, clipping) over batches of instance images."""

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
                   clip_grad: float | None = 10.0, log: Callable[[str], None] = print, *,
                   validate: Callable[[Any], dict[str, Any]] | None = None,
                   save: Callable[[dict[str, Any], bool], None] | None = None, state: dict[str, Any] | None = None,
                   checkpoint_every: int | None = None, patience: int | None = None, device: str = "auto",
                   logger=None, quiet: bool = True) -> dict[str, Any]:
    """Mask R-CNN through the epoch loop every task trains through (:func:`edgeseg.train.epochs.run_epochs`):
    SGD (momentum 0.9, weight decay 1e-4, linear warm-up then cosine) on ``dataset.instances``, the shared step
    (AMP only on CUDA, gradient scaler, clipping). ``clip_grad``: the gradients' global norm is clipped to it (a
    backbone transferred from a segmentation run starts with mask losses near 40 and gradient norms near 9,000 on
    fresh heads: unclipped, the second step overflows).

    ``validate(model)``: COCO AP on held-out images after each epoch (``{"mask": {"AP": ..}, "box": ..}``; the
    mask AP picks the best checkpoint and drives ``patience``); ``save(training_state, best)`` writes the run's
    checkpoint (each epoch end, every ``checkpoint_every`` steps, and ``best``); ``state``: a saved training state
    to continue exactly from. Returns the per-step losses, the skipped-sample counts, the history and the state."""
    import torch

    from edgeseg.core.device import pick_device
    from edgeseg.train.epochs import Progress, Validation, run_epochs
    from edgeseg.train.state import optimizer_state, restore_optimizer_state
    from edgeseg.train.step import lr_lambda, optimizer_step

    dev = pick_device(device)
    num_classes = model.roi_heads.box_predictor.cls_score.out_features
    keep, skipped = usable_indices(dataset, num_classes)
    if not keep:
        raise DataError("no training image has an instance; Mask R-CNN has nothing to learn from")
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    per_epoch = math.ceil(len(keep) / batch_size)
    total = epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, min(50, total // 5 + 1), "cosine"))
    amp_dtype = torch.float16 if dev.type == "cuda" else None  # AMP only on CUDA
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is not None)
    state = state or {}
    losses: list[float] = list(state.get("losses", []))
    if state:
        restore_optimizer_state(state, opt, sched, scaler)
    progress = Progress.from_state(state)
    parts: dict[str, Any] = {}

    def loss_of(indices) -> Any:
        """torchvision's own loss dictionary of one batch, summed (the parts kept for the log)."""
        xs, ts = zip(*(to_tensors(*dataset.instances(i), dev) for i in indices))
        parts.clear()
        parts.update(model(list(xs), list(ts)))
        return sum(parts.values())

    class Instances:
        """Mask R-CNN in the shared loop: shuffled batches of image indices, torchvision's losses, COCO AP."""

        def train_mode(self) -> None:
            model.train()

        def groups(self, epoch: int, step: int):
            gen = torch.Generator().manual_seed(seed)
            for _ in range(epoch + 1):  # the epoch's order, the same whether the run was resumed or not
                order = torch.randperm(len(keep), generator=gen)
            for b in range(step * batch_size, len(keep), batch_size):
                yield [[keep[int(i)] for i in order[b : b + batch_size]]]

        def step(self, group, epoch: int) -> float:
            loss = optimizer_step(group, loss_of, opt, scaler, params, dev, amp_dtype, clip_grad)
            losses.append(loss)
            return loss

        def images(self, group) -> int:
            return sum(len(g) for g in group)

        def validate(self) -> Validation:
            if validate is None:
                return Validation({}, -float(progress.running / max(progress.n_loss, 1)))
            ap = validate(model)
            return Validation({"val_mask_ap": ap["mask"]["AP"], "val_box_ap": ap["box"]["AP"]}, ap["mask"]["AP"],
                              (), ap)

        def notes(self) -> list[str]:
            return ["loss parts: " + " ".join(f"{k.removeprefix('loss_')} {float(v.detach()):.3f}"
                                              for k, v in parts.items())] if parts else []

        def oom_advice(self) -> str:
            return (f"with {batch_size} images per step; use a smaller --batch-size; the last good checkpoint is "
                    f"untouched (--resume continues from it)")

        def checkpoint(self, st: dict[str, Any], metrics: dict[str, Any], finished: bool = False) -> dict[str, Any]:
            return {**st, **optimizer_state(opt, sched, scaler), "losses": list(losses), "val": metrics,
                    "skipped": skipped, "finished": finished}

        def save(self, ck: dict[str, Any], best: bool = False) -> None:
            if save is not None:
                save(ck, best)

    if logger is None:
        from edgeseg.train.logger import RunLogger

        logger = RunLogger(".", [], enabled=False)
    task = Instances()
    t0 = run_epochs(task, progress, epochs, per_epoch, sched, logger, checkpoint_every=checkpoint_every,
                    patience=patience, score_name="val mask AP" if validate else "-loss", quiet=quiet,
                    device=dev, log=log)
    return {"losses": losses, "skipped": skipped, "steps": progress.global_step, "images": len(keep),
            "history": progress.history, "best": progress.best, "stopped_early": progress.stopped_early,
            "images_per_second": progress.images_per_second(), "state": task.checkpoint(
                progress.state(epochs, 0, t0), {}, finished=True)}


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
