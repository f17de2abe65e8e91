"""The Task seam (:mod:`edgeseg.tasks.base`): semantic and instance segmentation, and which one a run is."""

from __future__ import annotations

from pathlib import Path

from edgeseg.tasks.base import BundleModel, ExportEntry, Task
from edgeseg.tasks.instance.task import InstanceTask
from edgeseg.tasks.semantic.task import SemanticTask

TASKS: dict[str, Task] = {"semantic": SemanticTask(), "instance": InstanceTask()}

__all__ = ["TASKS", "BundleModel", "ExportEntry", "Task", "run_dir", "task_of"]


def run_dir(run: Path | str) -> Path:
    """The run directory a command was given (a checkpoint file names its folder)."""
    run = Path(run)
    return run.parent if run.is_file() else run


def task_of(run: Path | str) -> Task:
    """The task of a run: instance when it holds a Mask R-CNN checkpoint (and no semantic one), else semantic
    (whose loader names what is missing in a folder that is no run)."""
    return TASKS["instance"] if TASKS["instance"].owns(run_dir(run)) else TASKS["semantic"]
