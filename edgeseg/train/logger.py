"""Training logs: ``history.csv`` (one row per epoch) and TensorBoard scalars (``RUN/tensorboard/``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence


class RunLogger:
    """Rank 0's scalars; per-step loss/lr and per-epoch validation (the task's ``val_*`` figures, per-class IoU)."""

    def __init__(self, out_dir: Path, class_names: Sequence[str], enabled: bool = True) -> None:
        self.out_dir, self.class_names, self.enabled = Path(out_dir), list(class_names), enabled
        self._tb = None
        if enabled:
            import sys
            import types

            # TensorBoard writes its event files without TensorFlow when its "notf" marker module exists;
            # otherwise it imports TensorFlow (seconds of start-up and native log noise) just to write files.
            sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is pinned
                self._tb = None
            else:
                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    def step(self, global_step: int, loss: float, lr: float) -> None:
        if self._tb is not None:
            self._tb.add_scalar("train/loss", loss, global_step)
            self._tb.add_scalar("train/lr", lr, global_step)

    def epoch(self, global_step: int, row: dict[str, Any], iou_per_class: Sequence[float | None]) -> None:
        if self._tb is None:
            return
        for key, v in row.items():  # the loss and the task's validation figures (mIoU, pixel accuracy, mask AP..)
            if (key == "loss" or key.startswith("val_")) and isinstance(v, (int, float)):
                self._tb.add_scalar(f"epoch/{key}", v, row["epoch"])
        for name, v in zip(self.class_names, iou_per_class):
            if v is not None:
                self._tb.add_scalar(f"val_iou/{name}", v, row["epoch"])
        self._tb.flush()

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """``history.csv``, rewritten atomically after every epoch (complete rows only)."""
        if not self.enabled:
            return
        from edgeseg.core.atomic import atomic_path

        with atomic_path(self.out_dir / "history.csv") as tmp, open(tmp, "w", newline="") as f:
            if history:
                fields = list(dict.fromkeys(k for row in history for k in row))
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(history)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
