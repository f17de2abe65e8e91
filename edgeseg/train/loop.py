"""``edgeseg train``: CPU or CUDA, one process or several (DDP through torchrun), resumable at any step."""

from __future__ import annotations

import itertools
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from edgeseg.core.atomic import ensure_dir, write_json
from edgeseg.train.config import TrainConfig
from edgeseg.data import open_split
from edgeseg.data.transforms import (Preprocess, ShardSampler, TensorDataset, TrainSampler, batches,
                                     class_frequencies, collate)
from edgeseg.core.errors import CheckpointError, UsageError
from edgeseg.losses import CompositeLoss, parse_loss
from edgeseg.models import build_model, check_input_size, count_params
from edgeseg.train.checkpoint import CHECKPOINT_NAME, Checkpoint, load_checkpoint, save_checkpoint
from edgeseg.train.epochs import Progress, Validation, run_epochs
from edgeseg.train.distributed import DistContext, all_reduce_sum, barrier, cleanup, per_rank_batch, setup
from edgeseg.train.evaluate import evaluate, recalibrate_batchnorm
from edgeseg.train.logger import RunLogger
from edgeseg.train.state import cpu_state, optimizer_state, restore_optimizer_state
from edgeseg.train.step import lr_lambda, optimizer_step
from edgeseg.core.versions import package_versions

BEST_NAME = "best.pt"


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


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: TrainConfig, out_dir: Path, resume: bool = False, quiet: bool = False,
          init_from: Path | None = None, log: Callable[[str], None] = print, skip_bad: bool = False) -> Checkpoint:
    """Train ``cfg.model`` on ``cfg.data``; write ``out_dir/checkpoint.pt``, ``best.pt``, ``metrics.json``,
    ``history.csv`` and TensorBoard scalars (``tensorboard/``).

    One process, or one of several started by torchrun (DDP; only rank 0 writes). The checkpoint holds
    everything needed to continue exactly (weights, EMA, optimizer, scheduler, scaler, RNG states, epoch
    and step) and is replaced atomically at each epoch end and every ``cfg.checkpoint_every`` steps, so
    ``resume`` after a crash or ``kill -9`` ends with the weights of an uninterrupted run.

    A bad data file stops training with its name (run ``edgeseg data check`` for all of them); with
    ``skip_bad`` such files are left out, counted, and listed in ``metrics.json``.
    """
    ctx, device = setup(cfg.device)
    try:
        return _train(cfg, Path(out_dir), ctx, device, resume, quiet, init_from,
                      log if ctx.is_main else (lambda s: None), skip_bad)
    finally:
        cleanup(ctx)


def _train(cfg: TrainConfig, out_dir: Path, ctx: DistContext, device: torch.device, resume: bool, quiet: bool,
           init_from: Path | None, log: Callable[[str], None], skip_bad: bool) -> Checkpoint:
    if ctx.is_main:
        ensure_dir(out_dir, "run directory")
    ckpt_path = out_dir / CHECKPOINT_NAME
    state: dict[str, Any] = {}
    old: Checkpoint | None = None
    if resume:
        if not ckpt_path.exists():
            raise CheckpointError(f"--resume: no checkpoint at '{ckpt_path}' to resume from")
        old = load_checkpoint(ckpt_path)
        mine, theirs = cfg.to_json(), old.config.to_json()
        diff = [k for k, v in mine.items() if theirs.get(k) != v and k not in TrainConfig.RESUME_FREE]
        if diff:
            raise UsageError(f"--resume: run '{out_dir}' was trained with other settings "
                             f"({', '.join(f'{k}={theirs.get(k)!r}, now {mine[k]!r}' for k in diff)}); "
                             f"resume without changing them, or train into a new -o directory")
        state = old.state
        if state.get("finished"):
            log(f"run '{out_dir}' is already finished; nothing to resume")
            return old
    elif ckpt_path.exists():
        raise UsageError(f"run directory '{out_dir}' already holds a checkpoint; use --resume to continue it "
                         f"or -o for a new directory")
    local_batch = per_rank_batch(cfg.batch_size, ctx.world)
    use_cuda = device.type == "cuda"
    if cfg.sync_bn and not use_cuda:
        raise UsageError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); drop it on CPU")

    _seed_all(cfg.seed)
    train_ds = open_split(cfg.data, "train", cfg.image_size)
    val_ds = open_split(cfg.data, "val", cfg.image_size)
    if not getattr(train_ds, "labelled", True):
        raise UsageError(f"--data '{cfg.data}' has images but no masks: it can be checked against "
                         f"(edgeseg check RUN --data ...), not trained on")
    classes = list(train_ds.classes)
    n_cls = len(classes)
    pre = Preprocess(cfg.height, cfg.width, resize=cfg.resize)
    model = build_model(cfg.model, n_cls, **cfg.model_kwargs)
    inner = check_input_size(cfg.model, model, cfg.height, cfg.width)
    if inner != (cfg.height, cfg.width):
        log(f"{cfg.model} strides need multiples of {model.size_divisor}: a {cfg.height}x{cfg.width} input is padded "
            f"to {inner[0]}x{inner[1]} inside the graph (+{100 * (inner[0] * inner[1] / (cfg.height * cfg.width) - 1):.1f} % "
            f"compute) and the output cropped back")
    if init_from is not None and not state:
        _init_weights(model, Path(init_from), cfg, n_cls)
    if cfg.bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = cfg.bn_momentum
    if cfg.sync_bn and ctx.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if use_cuda:
        model = model.to(memory_format=torch.channels_last)
    ema = None
    if cfg.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)

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
    sampler = TrainSampler(len(tds), cfg.seed, ctx.rank, ctx.world)
    micro_per_epoch = max(1, sampler.num_samples // local_batch)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.accumulate)
    train_loader = _loader(tds, cfg, device, local_batch, sampler, drop_last=sampler.num_samples > local_batch)
    val_loader = _loader(vds, cfg, device, local_batch, ShardSampler(len(vds), ctx.rank, ctx.world))
    skipped: list[str] = list(state.get("skipped_files", []))

    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(total, int(cfg.warmup_epochs * steps_per_epoch), cfg.schedule))
    amp_dtype = None
    if use_cuda and cfg.amp:
        amp_dtype = _amp_dtype(cfg.amp_dtype, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    progress = Progress.from_state(state)
    if state:
        assert old is not None
        model.load_state_dict(old.weights)
        if ema is not None:
            ema.module.load_state_dict(old.ema_weights)
            ema.n_averaged.fill_(int(state["ema_n_averaged"]))
        restore_optimizer_state(state, opt, sched, scaler)

    train_model: nn.Module = model
    if ctx.enabled:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    forward = torch.compile(train_model) if cfg.compile else train_model
    logger = RunLogger(out_dir, [c.name for c in classes], enabled=ctx.is_main)

    log(f"training {cfg.model} ({count_params(model) / 1e6:.2f}M params, {n_cls} classes) on {device}"
        + (f" x {ctx.world} processes ({ctx.backend})" if ctx.enabled else "")
        + f", {len(train_ds)} train / {len(val_ds)} val images at {cfg.height}x{cfg.width} px ({cfg.resize}), {cfg.epochs} epochs x "
          f"{steps_per_epoch} steps of {cfg.batch_size * cfg.accumulate} images"
        + (f", resuming at epoch {progress.epoch + 1} step {progress.step_in_epoch}" if state else ""))

    def eval_model() -> nn.Module:
        return ema.module if ema is not None and cfg.export_weights == "ema" else model

    def snapshot(st: dict[str, Any], metrics: dict, finished: bool = False) -> Checkpoint:
        st = {**st, **optimizer_state(opt, sched, scaler), "class_weights": weights, "finished": finished,
              "skipped_files": sorted(set(skipped))}
        if ema is not None:
            st["ema_n_averaged"] = int(ema.n_averaged.item())
        return Checkpoint(config=cfg, preprocess=pre, classes=classes, weights=cpu_state(model),
                          ema_weights=cpu_state(ema.module) if ema is not None else None, metrics=metrics,
                          versions=package_versions(), state=st)

    class Semantic:
        """The semantic task in the shared epoch loop: sampler-ordered micro-batches, the criterion, the
        confusion-matrix validation and ``checkpoint.pt``."""

        def train_mode(self) -> None:
            model.train()

        def groups(self, epoch: int, step: int):
            sampler.set_epoch(epoch)
            sampler.set_start(step * cfg.accumulate * local_batch)
            stream = batches(train_loader, skip_bad, skipped, cfg.data)
            while True:
                yield list(itertools.islice(stream, min(cfg.accumulate, micro_per_epoch - step * cfg.accumulate)))
                step += 1

        def step(self, group: list, epoch: int) -> float:
            return _optimizer_step(cfg, forward, train_model, model, group, criterion, epoch, opt, scaler, device,
                                   amp_dtype, ctx)

        def images(self, group: list) -> int:
            return sum(len(b[0]) for b in group)

        def validate(self) -> Validation:
            val = evaluate(eval_model(), batches(val_loader, skip_bad, skipped, cfg.data), n_cls, device,
                           reduce=lambda cm: _reduce_confusion(ctx, cm, device))
            fields = {"val_miou": val["miou"], "val_pixel_accuracy": val["pixel_accuracy"],
                      **{f"iou_{c.name}": v for c, v in zip(classes, val["iou_per_class"])}}
            return Validation(fields, val["miou"], val["iou_per_class"], val)

        def notes(self) -> list[str]:
            return [f"skipped {len(set(skipped))} bad file(s) so far (--skip-bad)"] if skipped else []

        def oom_advice(self) -> str:
            return (f"with {local_batch} images per process at {cfg.height}x{cfg.width} px; use a smaller "
                    f"--batch-size, or --accumulate N with a batch N times smaller to keep the effective batch; the "
                    f"last good checkpoint '{ckpt_path}' is untouched (--resume continues from it)")

        def checkpoint(self, st: dict[str, Any], metrics: dict, finished: bool = False) -> Checkpoint:
            return snapshot(st, metrics, finished)

        def save(self, ck: Checkpoint, best: bool = False) -> None:
            if ctx.is_main:
                save_checkpoint(ck, out_dir / BEST_NAME if best else ckpt_path)

    t0 = run_epochs(Semantic(), progress, cfg.epochs, steps_per_epoch, sched, logger, ema=ema, model=model,
                    checkpoint_every=cfg.checkpoint_every, patience=cfg.patience, quiet=quiet or not ctx.is_main,
                    world=ctx.world, device=device, log=log)

    # Rank 0 re-estimates BatchNorm statistics (precise BN) and measures the final model on the whole val set.
    barrier(ctx)
    ckpt: Checkpoint | None = None
    if ctx.is_main:
        final = eval_model()
        full_train = _loader(tds, cfg, device, cfg.batch_size, TrainSampler(len(tds), cfg.seed),
                             drop_last=len(tds) > cfg.batch_size)
        full_train.sampler.set_epoch(cfg.epochs)
        used = recalibrate_batchnorm(final, batches(full_train, skip_bad, skipped, cfg.data), device,
                                     cfg.precise_bn_batches)
        full_val = _loader(vds, cfg, device, cfg.batch_size, ShardSampler(len(vds)))
        val = evaluate(final, batches(full_val, skip_bad, skipped, cfg.data), n_cls, device)
        seconds = progress.prior_seconds + time.time() - t0
        metrics = {"val": val, "params": count_params(model), "train_seconds": round(seconds, 1),
                   "train_images_per_second": progress.images_per_second(),
                   "bn_recalibration_batches": used, "history": progress.history, "device": str(device),
                   "processes": ctx.world, "distributed_backend": ctx.backend,
                   "amp": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype),
                   "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if use_cuda
                   else None, "weights": "ema" if final is not model else "raw",
                   "best_val_miou": progress.best, "stopped_early": progress.stopped_early,
                   "skipped_files": sorted(set(skipped))}
        ckpt = snapshot(progress.state(cfg.epochs, 0, t0), metrics, finished=True)
        save_checkpoint(ckpt, ckpt_path)
        write_json(out_dir / "metrics.json", metrics)
        logger.write_history(progress.history)
        log(f"val mIoU {val['miou']:.4f} (pixel accuracy {val['pixel_accuracy']:.4f}) after "
            f"{seconds:.0f} s; checkpoint: {ckpt_path}")
        ckpt.path = ckpt_path
    logger.close()
    barrier(ctx)
    if ckpt is None:
        ckpt = load_checkpoint(ckpt_path)
    return ckpt


def _optimizer_step(cfg: TrainConfig, forward, train_model: nn.Module, model: nn.Module, group: list,
                    criterion: CompositeLoss, epoch: int, opt, scaler, device: torch.device, amp_dtype,
                    ctx: DistContext) -> float:
    """The shared step (:func:`edgeseg.train.step.optimizer_step`) with the semantic loss: the criterion on the
    model's outputs for each micro-batch's images, masks and distance maps. Returns the mean loss."""

    def loss_of(batch) -> torch.Tensor:
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        dist = batch[2].to(device, non_blocking=True) if len(batch) > 2 else None
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return criterion(forward(x), y, dist, epoch)

    return optimizer_step(group, loss_of, opt, scaler, model.parameters(), device, amp_dtype, cfg.clip_grad,
                          no_sync=(lambda j: train_model.no_sync()) if ctx.enabled else None)


def _amp_dtype(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for ``TrainConfig.amp_dtype`` on a CUDA device."""
    bf16 = torch.cuda.is_bf16_supported()
    if name == "bf16" and not bf16:
        raise UsageError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                         f"use --amp fp16 (with a grad scaler) or --amp off")
    if name == "fp16" or (name == "auto" and not bf16):
        return torch.float16
    return torch.bfloat16


def _reduce_confusion(ctx: DistContext, cm: np.ndarray, device: torch.device) -> np.ndarray:
    if not ctx.enabled:
        return cm
    t = torch.from_numpy(cm).to("cuda" if device.type == "cuda" else "cpu")
    return all_reduce_sum(ctx, t).cpu().numpy()


def _loader(ds: TensorDataset, cfg: TrainConfig, device: torch.device, batch: int, sampler,
            drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A loader built once per run: persistent workers see each epoch through the sampler's ``(i, epoch)``.

    It has its own generator, so creating its iterator never draws from the global RNG (exact resume).
    """
    workers = cfg.num_workers if cfg.num_workers is not None else (4 if device.type == "cuda" else 0)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch, sampler=sampler, collate_fn=collate, num_workers=workers,
        persistent_workers=workers > 0, pin_memory=device.type == "cuda", drop_last=drop_last,
        generator=torch.Generator().manual_seed(cfg.seed))


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
