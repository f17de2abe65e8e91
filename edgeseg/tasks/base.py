"""The Task seam: what a model's outputs mean, so that every step (export, check, report, bundle) is written once
and runs over every task.

A task answers the questions a step asks about a run of its kind: which file holds the trained model, where its
exports live and how their records read, which targets and precisions it exports to, what the bundle's manifest
says about the model's input and outputs, and what the app developer's README shows. ``semantic``
(:mod:`edgeseg.tasks.semantic`) and ``instance`` (:mod:`edgeseg.tasks.instance`) implement it;
:func:`edgeseg.tasks.task_of` picks the task of a run directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from edgeseg.core.errors import DataError


@dataclass(frozen=True)
class ExportEntry:
    """One export directory of a run: its ``export.json`` record and its ``parity.json`` (None: never checked)."""

    dir: Path
    record: dict[str, Any]
    parity: dict[str, Any] | None

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def status(self) -> str:
        """``passed``, ``failed``, ``not-verified`` or ``unchecked``."""
        return (self.parity or {}).get("status") or "unchecked"


def read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    """A JSON file the run holds; unreadable or not an object: :class:`DataError` naming the file and ``fix``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"'{path}' is not a readable {what} ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(data, dict):
        raise DataError(f"'{path}' is not a readable {what} (a JSON {type(data).__name__}, not an object); {fix}")
    return data


@dataclass
class BundleModel:
    """What a task tells the bundle step about the run's model: its checkpoint file, the metadata written into
    the model files (``info``: name, version, author, license, description, classes), the manifest's
    task-specific head (model, input, classes, and e.g. post-processing) and what its writers need
    (``context``)."""

    checkpoint: Path
    info: dict[str, Any]
    manifest: dict[str, Any]
    context: dict[str, Any]


class Task(Protocol):
    """The questions the steps ask a task (see the module docstring)."""

    name: str  # "semantic" or "instance"
    parity_kind: str  # how its check is named in messages: "parity", "instance-parity"
    outputs: str  # what its check compares: "masks", "instances"

    def owns(self, run: Path) -> bool:
        """Whether ``run`` (a directory) is a run of this task."""

    def checkpoint(self, run: Path) -> Path:
        """The file of ``run`` the exports are made from (not loaded); a clear error when it is missing."""

    def exports(self, run: Path, target: str) -> list[ExportEntry]:
        """Every export of ``target`` in ``run``, in name order."""

    def export_name(self, target: str, choice: str) -> str:
        """The export directory a user's ``--tflite``/``--coreml`` choice names (``int8-pixels`` -> ``tflite-int8-pixels``)."""

    def bundle_model(self, checkpoint: Path, name: str | None, version: str, author: str, license: str,
                     description: str, chosen: dict[str, ExportEntry | None]) -> BundleModel:
        """The model part of a bundle's manifest (of the run whose ``checkpoint`` this is) for the exports
        ``chosen`` per platform."""

    def preference(self, target: str) -> Callable[[ExportEntry], Any]:
        """Sort key among passing exports of ``target`` when the bundle picks one itself (first wins)."""

    def write_android(self, entry: ExportEntry, dst: Path, model: BundleModel) -> dict[str, Any]:
        """Write the TFLite file the app ships to ``dst``; returns its manifest ``input``/``output`` entries."""

    def ios_io(self, entry: ExportEntry, model: BundleModel) -> dict[str, Any]:
        """The Core ML package's manifest ``input``/``output`` entries (the bundle step saves the package)."""

    def evidence(self, entry: ExportEntry) -> dict[str, Any]:
        """The parity evidence the manifest carries for one platform."""

    def app_readme(self, manifest: dict[str, Any]) -> str:
        """The app developer's README.md (Kotlin and Swift) for this manifest."""

    def report(self, run: Path, threads: int) -> "ReportSubject":
        """What ``edgeseg report`` measures and writes for ``run``."""


class ReportSubject(Protocol):
    """What the report step asks a task about one run: the model's description, the reference to time, the
    exports in report order, each export's row and runner, and how the task's figures read (markdown, html)."""

    run: Path
    model: dict[str, Any]  # report.json "model"
    training: dict[str, Any]  # report.json "training"
    example: Any  # the input every runner is timed on (NCHW float32)
    params: int
    fields: dict[str, Any]  # more top-level report.json fields (e.g. "task")

    def reference_row(self, runs: int, warmup: int, threads: int) -> dict[str, Any]:
        """The PyTorch row: size, params and latency of the reference."""

    def entries(self) -> list[ExportEntry]:
        """The exports to report on, in report order (a usage error when there are none)."""

    def row(self, entry: ExportEntry) -> dict[str, Any]:
        """An export's row without its latency: name, target, precision, size, path, parity figures."""

    def runner(self, entry: ExportEntry, threads: int) -> tuple[Callable[[Any], Any] | None, str]:
        """The export's runtime to time, or (None, why) when it cannot run here (a load failure raises the
        exporter's error)."""

    def status(self, rows: list[dict[str, Any]], verdicts: list[str]) -> str:
        """report.json "status" from the rows and the CI gates' verdicts."""

    def markdown(self, report: dict[str, Any], gates: list[str]) -> str:
        """report.md, with ``gates`` (the budget's and baseline's markdown lines) in their place."""

    def table(self, report: dict[str, Any]) -> tuple[str, tuple[str, ...], list[str]]:
        """report.html's intro (HTML), table header and ``<tr>`` rows."""

    def figures(self, report: dict[str, Any]) -> list[tuple[str, str]]:
        """report.html's task figures from the records alone (semantic: every class's IoU per export)."""

    def overlays(self, report: dict[str, Any], count: int, threads: int) -> list[tuple[str, str]]:
        """report.html's figures of PyTorch vs each checked export on the first ``count`` test images."""
