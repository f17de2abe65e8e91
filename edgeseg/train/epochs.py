"""The epoch loop every task trains through (semantic segmentation and Mask R-CNN alike).

A task gives the loop a :class:`Trainee`: its optimizer-step groups for an epoch (from any step, so a run resumes
where it stopped), one optimizer step (:func:`edgeseg.train.step.optimizer_step` with the task's loss), the count
of images in a group, a validation (the epoch's row for ``history.csv`` and the score that picks ``best``), and its
checkpoint format. The loop owns what must be the same for every task: the progress bar, the scheduler and EMA
steps, the non-finite-loss and out-of-memory errors, step checkpoints every ``checkpoint_every`` steps, the history,
the best checkpoint, early stopping, and the counters an exact resume needs (:class:`Progress`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

from edgeseg.core.errors import EdgesegError, UsageError
from edgeseg.core.progress import progress_bar


class OutOfMemory(EdgesegError):
    """A training step ran out of device memory."""


def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


@dataclass
class Progress:
    """The loop's counters, saved in every checkpoint's training state so a resumed run continues exactly."""

    epoch: int = 0  # epochs finished (or the one in progress, at a step checkpoint)
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = -1.0
    stale: int = 0
    running: float = 0.0
    n_loss: int = 0
    step_seconds: float = 0.0
    step_images: int = 0
    prior_seconds: float = 0.0
    stopped_early: bool = False

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> "Progress":
        """From a checkpoint's training state (empty: a new run); ``best_miou`` is an older semantic run's key."""
        return cls(epoch=int(s.get("epoch", 0)), step_in_epoch=int(s.get("step_in_epoch", 0)),
                   global_step=int(s.get("global_step", 0)), history=list(s.get("history", [])),
                   best=float(s.get("best_score", s.get("best_miou", -1.0))), stale=int(s.get("stale_epochs", 0)),
                   running=float(s.get("running_loss", 0.0)), n_loss=int(s.get("running_steps", 0)),
                   step_seconds=float(s.get("step_seconds", 0.0)), step_images=int(s.get("step_images", 0)),
                   prior_seconds=float(s.get("seconds", 0.0)))

    def state(self, epoch: int, step: int, t0: float) -> dict[str, Any]:
        return {"epoch": epoch, "step_in_epoch": step, "global_step": self.global_step, "history": self.history,
                "best_score": self.best, "seconds": self.prior_seconds + time.time() - t0,
                "step_seconds": self.step_seconds, "step_images": self.step_images, "stale_epochs": self.stale,
                "running_loss": self.running, "running_steps": self.n_loss}

    def images_per_second(self) -> float:
        return round(self.step_images / max(self.step_seconds, 1e-9), 2)


@dataclass
class Validation:
    """One epoch's validation: the history row's fields, the score that picks ``best``, per-class values for
    TensorBoard, and the record kept in the epoch's checkpoint."""

    fields: dict[str, Any]
    score: float
    per_class: Sequence[float | None] = ()
    record: dict[str, Any] = field(default_factory=dict)


class Trainee(Protocol):
    """What a task gives the loop (see the module's docstring)."""

    def train_mode(self) -> None: ...

    def groups(self, epoch: int, step: int) -> Iterator[Sequence[Any]]: ...

    def step(self, group: Sequence[Any], epoch: int) -> float: ...

    def images(self, group: Sequence[Any]) -> int: ...

    def validate(self) -> Validation: ...

    def notes(self) -> list[str]: ...

    def oom_advice(self) -> str: ...

    def checkpoint(self, state: dict[str, Any], metrics: dict[str, Any], finished: bool = False) -> Any: ...

    def save(self, ck: Any, best: bool = False) -> None: ...


def run_epochs(task: Trainee, p: Progress, epochs: int, steps_per_epoch: int, sched, logger, *, ema=None, model=None,
               checkpoint_every: int | None = None, patience: int | None = None, score_name: str = "val mIoU",
               quiet: bool = False, world: int = 1, device: Any = "cpu", log=print) -> float:
    """Train from ``p`` (epoch, step) to ``epochs``; returns the time origin of ``p.state`` (for the final one)."""
    t0 = time.time()
    start_epoch, start_step = p.epoch, p.step_in_epoch
    with progress_bar(steps_per_epoch * epochs, "train", disable=quiet,
                      completed=start_epoch * steps_per_epoch + start_step) as bar:
        for epoch in range(start_epoch, epochs):
            task.train_mode()
            step = start_step if epoch == start_epoch else 0
            if epoch != start_epoch:
                p.running, p.n_loss = 0.0, 0
            stream = task.groups(epoch, step)
            while step < steps_per_epoch:
                ts = time.perf_counter()  # data loading included, as in any training loop's throughput
                group = next(stream, None)
                if not group:
                    break
                try:
                    loss_value = task.step(group, epoch)
                except Exception as e:
                    if is_oom(e):
                        raise OutOfMemory(f"out of memory at epoch {epoch + 1} step {step + 1} on {device} "
                                          f"{task.oom_advice()}") from None
                    raise
                sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                if not math.isfinite(loss_value):
                    raise UsageError(f"loss became {loss_value} at epoch {epoch + 1}; lower --lr")
                p.step_seconds += time.perf_counter() - ts
                p.step_images += task.images(group) * world
                step += 1
                p.global_step += 1
                p.running += loss_value
                p.n_loss += 1
                logger.step(p.global_step, loss_value, sched.get_last_lr()[0])
                bar.advance(f"epoch {epoch + 1}/{epochs} loss {p.running / p.n_loss:.3f}")
                if checkpoint_every and p.global_step % checkpoint_every == 0 and step < steps_per_epoch:
                    task.save(task.checkpoint(p.state(epoch, step, t0), {}))
            val = task.validate()
            row = {"epoch": epoch + 1, "loss": p.running / max(p.n_loss, 1), "lr": sched.get_last_lr()[0],
                   **val.fields}
            p.history.append(row)
            improved = val.score > p.best
            p.best = max(p.best, val.score)
            p.stale = 0 if improved else p.stale + 1
            for note in task.notes():
                bar.note(note)
            bar.note(f"epoch {epoch + 1}: loss {row['loss']:.4f}  {score_name} {val.score:.4f}")
            logger.epoch(p.global_step, row, val.per_class)
            logger.write_history(p.history)
            ck = task.checkpoint(p.state(epoch + 1, 0, t0), {"val": val.record})
            task.save(ck)
            if improved:
                task.save(ck, best=True)
            if patience is not None and p.stale >= patience and epoch + 1 < epochs:
                log(f"early stop: {score_name} has not improved for {p.stale} epochs (best {p.best:.4f})")
                p.stopped_early = True
                break
    return t0
