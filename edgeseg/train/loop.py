"""``edgeseg train``: one device (CPU or CUDA, chosen automatically), resumable at epoch boundaries."""

from __future__ import annotations

import csv
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from edgeseg.atomic import ensure_dir, write_json
from edgeseg.config import TrainConfig
from edgeseg.data import open_split
from edgeseg.data.transforms import EpochSampler, Preprocess, TensorDataset, batches, class_frequencies, collate
from edgeseg.errors import CheckpointError, UsageError
from edgeseg.losses import CompositeLoss, parse_loss
from edgeseg.models import build_model, check_input_size, count_params
from edgeseg.progress import progress_bar
from edgeseg.train.checkpoint import CHECKPOINT_NAME, Checkpoint, load_checkpoint, save_checkpoint
from edgeseg.train.evaluate import evaluate, recalibrate_batchnorm
from edgeseg.versions import package_versions


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device '{name}' is not a device; use auto, cpu or cuda[:N]") from None


def compute_class_weights(freq: np.ndarray, mode: str) -> np.ndarray | None:
    """Inverse-frequency or median-frequency-balancing (Eigen & Fergus) weights; absent classes get 0."""
    if mode == "none":
        return None
    f = freq / max(freq.sum(), 1.0)
    present = f > 0
    w = np.zeros_like(f)
    if mode == "inverse":
        w[present] = 1.0 / f[present]
        w *= present.sum() / w.sum()  # mean weight 1 over present classes
    else:
        w[present] = np.median(f[present]) / f[present]
    return w.astype(np.float32)


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        t = min(max(t, 0.0), 1.0)
        return 0.5 * (1 + math.cos(math.pi * t)) if schedule == "cosine" else (1 - t) ** 0.9

    return f


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader(ds: TensorDataset, cfg: TrainConfig, device: torch.device, shuffle: bool) -> torch.utils.data.DataLoader:
    """A loader built once per run: persistent workers see each epoch through :class:`EpochSampler`."""
    workers = cfg.num_workers if cfg.num_workers is not None else (4 if device.type == "cuda" else 0)
    return torch.utils.data.DataLoader(
        ds, batch_size=cfg.batch_size, sampler=EpochSampler(len(ds), cfg.seed, shuffle), collate_fn=collate,
        num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
        drop_last=shuffle and len(ds) > cfg.batch_size)


def _epoch(loader: torch.utils.data.DataLoader, epoch: int) -> torch.utils.data.DataLoader:
    loader.sampler.set_epoch(epoch)
    return loader


def train(cfg: TrainConfig, out_dir: Path, resume: bool = False, quiet: bool = False,
          init_from: Path | None = None, log: Callable[[str], None] = print, skip_bad: bool = False) -> Checkpoint:
    """Train ``cfg.model`` on ``cfg.data``; write ``out_dir/checkpoint.pt``, ``metrics.json``, ``history.csv``.

    A bad data file stops training with its name (run ``edgeseg data check`` for all of them); with
    ``skip_bad`` such files are left out, counted, and listed in ``metrics.json``.
    """
    out_dir = ensure_dir(Path(out_dir), "run directory")
    ckpt_path = out_dir / CHECKPOINT_NAME
    device = pick_device(cfg.device)
    start_epoch, state = 0, {}
    if resume:
        if not ckpt_path.exists():
            raise CheckpointError(f"--resume: no checkpoint at '{ckpt_path}' to resume from")
        old = load_checkpoint(ckpt_path)
        if old.config.to_json() != cfg.to_json():
            diff = [k for k, v in cfg.to_json().items() if old.config.to_json().get(k) != v]
            raise UsageError(f"--resume: run '{out_dir}' was trained with other settings ({', '.join(diff)}); "
                             f"resume without changing them, or train into a new -o directory")
        state = old.state
        if state.get("finished"):
            log(f"run '{out_dir}' is already finished; nothing to resume")
            return old
        start_epoch = int(state["epoch"])
    elif ckpt_path.exists():
        raise UsageError(f"run directory '{out_dir}' already holds a checkpoint; use --resume to continue it "
                         f"or -o for a new directory")

    _seed_all(cfg.seed)
    train_ds = open_split(cfg.data, "train", cfg.image_size)
    val_ds = open_split(cfg.data, "val", cfg.image_size)
    classes = list(train_ds.classes)
    n_cls = len(classes)
    pre = Preprocess(cfg.image_size, cfg.image_size)
    model = build_model(cfg.model, n_cls, **cfg.model_kwargs)
    check_input_size(cfg.model, model, cfg.image_size, cfg.image_size)
    if init_from is not None and not state:
        _init_weights(model, Path(init_from), cfg, n_cls)
    if cfg.bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = cfg.bn_momentum
    model.to(device)
    use_cuda = device.type == "cuda"
    if use_cuda:
        model = model.to(memory_format=torch.channels_last)

    weights = state.get("class_weights")
    if weights is None and cfg.class_weights != "none":
        weights = compute_class_weights(class_frequencies(train_ds, n_cls, pre), cfg.class_weights).tolist()
    criterion = build_criterion(cfg.loss, model, n_cls, weights)
    if criterion.spec != cfg.loss:
        log(f"loss: {criterion.spec} ({cfg.model} adds its own terms; name any of them in --loss to set them)")
    for t in criterion.terms:
        t.loss.to(device)

    tds = TensorDataset(train_ds, pre, augment=cfg.augment, seed=cfg.seed,
                        distance_maps=criterion.needs_distance_maps)
    vds = TensorDataset(val_ds, pre)
    train_loader, val_loader = _loader(tds, cfg, device, shuffle=True), _loader(vds, cfg, device, shuffle=False)
    skipped: list[str] = list(state.get("skipped_files", []))

    def data(loader, epoch):
        return batches(_epoch(loader, epoch), skip_bad, skipped, cfg.data)

    steps_per_epoch = len(train_loader)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(total, int(cfg.warmup_epochs * steps_per_epoch), cfg.schedule))
    amp_dtype = None
    if use_cuda and cfg.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    history: list[dict[str, Any]] = list(state.get("history", []))
    best = float(state.get("best_miou", -1.0))
    if state:
        model.load_state_dict(old.weights)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])

    log(f"training {cfg.model} ({count_params(model) / 1e6:.2f}M params, {n_cls} classes) on {device}, "
        f"{len(train_ds)} train / {len(val_ds)} val images at {cfg.image_size}px, "
        f"{cfg.epochs} epochs x {steps_per_epoch} steps" + (f", resuming at epoch {start_epoch + 1}" if state else ""))
    t0, prior_seconds = time.time(), float(state.get("seconds", 0.0))
    with progress_bar(total, "train", disable=quiet, completed=start_epoch * steps_per_epoch) as bar:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            running, n = 0.0, 0
            for batch in data(train_loader, epoch):
                x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
                dist = batch[2].to(device, non_blocking=True) if len(batch) > 2 else None
                if use_cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    loss = criterion(model(x), y, dist, epoch)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                if not torch.isfinite(loss):
                    raise UsageError(f"loss became {loss.item()} at epoch {epoch + 1}; lower --lr")
                running += loss.item()
                n += 1
                bar.advance(f"epoch {epoch + 1}/{cfg.epochs} loss {running / n:.3f}")
            val = evaluate(model, data(val_loader, 0), n_cls, device)
            if skipped:
                bar.note(f"skipped {len(set(skipped))} bad file(s) so far (--skip-bad)")
            row = {"epoch": epoch + 1, "loss": running / max(n, 1), "lr": sched.get_last_lr()[0],
                   "val_miou": val["miou"], "val_pixel_accuracy": val["pixel_accuracy"]}
            history.append(row)
            best = max(best, val["miou"])
            bar.note(f"epoch {epoch + 1}: loss {row['loss']:.4f}  val mIoU {val['miou']:.4f}")
            state = {"epoch": epoch + 1, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(), "history": history,
                     "best_miou": best, "class_weights": weights, "finished": False,
                     "skipped_files": sorted(set(skipped)),
                     "seconds": prior_seconds + time.time() - t0}
            save_checkpoint(_make_ckpt(cfg, pre, classes, model, {"val": val}, state), out_dir / CHECKPOINT_NAME)

    # Precise BatchNorm: eval-mode statistics measured with the final weights.
    used = recalibrate_batchnorm(model, data(train_loader, cfg.epochs), device, cfg.precise_bn_batches)
    val = evaluate(model, data(val_loader, 0), n_cls, device)
    seconds = prior_seconds + time.time() - t0
    metrics = {"val": val, "params": count_params(model), "train_seconds": round(seconds, 1),
               "bn_recalibration_batches": used, "history": history, "device": str(device),
               "skipped_files": sorted(set(skipped))}
    state = {**state, "finished": True}
    ckpt = _make_ckpt(cfg, pre, classes, model, metrics, state)
    save_checkpoint(ckpt, ckpt_path)
    write_json(out_dir / "metrics.json", metrics)
    _write_history(out_dir / "history.csv", history)
    log(f"val mIoU {val['miou']:.4f} (pixel accuracy {val['pixel_accuracy']:.4f}) after "
        f"{seconds:.0f} s; checkpoint: {ckpt_path}")
    ckpt.path = ckpt_path
    return ckpt


def build_criterion(spec: str, model: nn.Module, num_classes: int,
                    class_weights: list[float] | None = None) -> CompositeLoss:
    """The ``--loss`` spec, plus the model's own ``loss_terms`` (Gated-SCNN's edge and dual-task terms)
    unless the spec already names one of them; a term reading an output the model lacks is refused."""
    criterion = parse_loss(spec, num_classes, class_weights)
    own = getattr(model, "loss_terms", "")
    if own:
        own_names = {t.name for t in parse_loss(own, num_classes).terms}
        if not own_names & {t.name for t in criterion.terms}:
            criterion = parse_loss(f"{spec} + {own}", num_classes, class_weights)
    produced = set(getattr(model, "train_outputs", ()))
    missing = sorted(criterion.reads_outputs - produced)
    if missing:
        readers = [t.name for t in criterion.terms if set(getattr(t.loss, "reads_outputs", ())) & set(missing)]
        raise UsageError(f"--loss: {', '.join(repr(r) for r in readers)} needs the model's "
                         f"{', '.join(repr(m) for m in missing)} output, which this model does not produce in "
                         f"training (only gscnn does); drop it from --loss")
    return criterion


def _init_weights(model: nn.Module, path: Path, cfg: TrainConfig, num_classes: int) -> None:
    """Start from another checkpoint's weights; it must be the same architecture and class count."""
    src = load_checkpoint(path)
    try:
        model.load_state_dict(src.weights)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise CheckpointError(
            f"--init-from '{src.path}' holds a {src.config.model} {src.config.model_kwargs} with "
            f"{src.num_classes} classes, which does not fit {cfg.model} {cfg.model_kwargs} with {num_classes} "
            f"classes: {lines[1] if len(lines) > 1 else lines[0]}"
        ) from None


def _make_ckpt(cfg: TrainConfig, pre: Preprocess, classes: list, model: nn.Module, metrics: dict,
               state: dict) -> Checkpoint:
    weights = {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone()
               for k, v in model.state_dict().items()}
    return Checkpoint(config=cfg, preprocess=pre, classes=classes, weights=weights, metrics=metrics,
                      versions=package_versions(), state=state)


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    from edgeseg.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        if history:
            w = csv.DictWriter(f, fieldnames=list(history[0]))
            w.writeheader()
            w.writerows(history)
