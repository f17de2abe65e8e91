"""``edgeseg train``: a run of either task from the same flags (``--model maskrcnn`` trains instance
segmentation through :func:`edgeseg.tasks.instance.run.train_run`, every other model the semantic loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from edgeseg.core.errors import UsageError
from edgeseg.core.image_size import parse_image_size


def train_instance(output: Path, data: str | None, model_opts: dict[str, Any], image_size: str | None,
                   epochs: int | None, batch_size: int | None, lr: float | None, seed: int | None,
                   config: Path | None, log: Callable[[str], None]) -> dict[str, Any]:
    """``train --model maskrcnn``: the instance trainer with the common flags; refuses those it cannot honour."""
    from edgeseg.tasks.instance.run import train_run

    if config:
        raise UsageError("--config describes semantic runs; for Mask R-CNN give the flags (edgeseg train --model "
                         "maskrcnn --data ... --image-size ... --epochs ...)")
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
                     seed=seed if seed is not None else 0, log=log, **kw)
