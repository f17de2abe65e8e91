"""``edgeseg train``: a run of either task from the same flags (``--model maskrcnn`` trains instance
segmentation through :func:`edgeseg.tasks.instance.run.train_run`, every other model the semantic task; both
through the shared epoch loop, :mod:`edgeseg.train.epochs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from edgeseg.core.errors import UsageError
from edgeseg.core.image_size import parse_image_size


# ``train`` flags of the semantic task only (per-pixel losses and class weights, the semantic data pipeline,
# EMA/precise BN over BatchNorm statistics, DDP and AMP choices): refused for Mask R-CNN rather than ignored
SEMANTIC_ONLY = ("loss", "class_weights", "augment", "workers", "skip_bad", "resize", "schedule", "accumulate",
                 "clip_grad", "ema", "export_weights", "precise_bn_batches", "amp", "compile", "sync_bn", "init_from",
                 "nproc_per_node")


def train_instance(output: Path, data: str | None, model_opts: dict[str, Any], image_size: str | None,
                   epochs: int | None, batch_size: int | None, lr: float | None, seed: int | None,
                   config: Path | None, log: Callable[[str], None], *, given: Sequence[str] = (),
                   resume: bool = False, checkpoint_every: int | None = None, patience: int | None = None,
                   device: str | None = None, quiet: bool = True) -> dict[str, Any]:
    """``train --model maskrcnn``: the instance trainer with the common flags and the shared loop's (resume,
    step checkpoints, patience, device); refuses those it cannot honour (``given``: the flags set)."""
    from edgeseg.tasks.instance.run import train_run

    if config:
        raise UsageError("--config describes semantic runs; for Mask R-CNN give the flags (edgeseg train --model "
                         "maskrcnn --data ... --image-size ... --epochs ...)")
    refused = [k for k in SEMANTIC_ONLY if k in given]
    if refused:
        raise UsageError(f"{', '.join('--' + k.replace('_', '-') for k in refused)}: not for --model maskrcnn "
                         f"(semantic training only); Mask R-CNN takes --data, --image-size, --epochs, --batch-size, "
                         f"--lr, --seed, --resume, --checkpoint-every, --patience, --device (more in: edgeseg "
                         f"maskrcnn train --help)")
    unknown = set(model_opts) - {"backbone"}
    if unknown:
        raise UsageError(f"--model-opt {', '.join(sorted(unknown))}: Mask R-CNN takes backbone=mobilenet_v3_large|"
                         f"resnet50 (more in: edgeseg maskrcnn train --help)")
    size = 64
    if image_size is not None:
        h, w = parse_image_size(image_size)
        if h != w:
            raise UsageError(f"--image-size {image_size}: the Mask R-CNN export graph is square; give one side")
        size = h
    kw = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)) if v is not None}
    return train_run(output, data or "synthetic", str(model_opts.get("backbone", "mobilenet_v3_large")), size,
                     seed=seed if seed is not None else 0, log=log, resume=resume, checkpoint_every=checkpoint_every,
                     patience=patience, device=device or "auto", quiet=quiet, **kw)
