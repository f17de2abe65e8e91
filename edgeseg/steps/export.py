"""``edgeseg export`` / ``edgeseg check``: every (target, precision) pair of a run, whatever its task.

The task (:func:`edgeseg.tasks.task_of`) says which targets and precisions it has and which options it takes;
an option the run's task does not take, set to anything but its default, is refused naming the flag (it would
otherwise be silently ignored). The work itself is the task's: a semantic run exports all pairs in one process
with the checkpoint and calibration read once (:mod:`edgeseg.tasks.semantic.run`); an instance run builds the
static graph and checks instance parity per export (:mod:`edgeseg.tasks.instance.run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgeseg.core.errors import UsageError
from edgeseg.core.pairs import export_pairs
from edgeseg.tasks import Task, task_of

# every export/check option and its default: a task that does not take one refuses a changed value
OPTION_DEFAULTS: dict[str, Any] = {
    "calibration": 100, "weights": "auto", "output": "logits", "input_kind": "image", "deployment_target": None,
    "min_agreement": None, "min_mask_miou": None, "max_miou_drop": None, "max_class_drop": None,
    "data": None, "compute_units": None,
    "threads": 2, "limit": None, "score_threshold": 0.3, "int8_route": "ladder", "max_float_macs": 10.0,
    "device": "host", "arm_cpus": None, "kernels": None, "gate_kernels": None}
FLAGS = {"input_kind": "--input", "arm_cpus": "--arm-cpu"}


@dataclass
class Outcome:
    """What a step did: the run's task, the pairs it worked on, the notes on pairs skipped (also logged before
    the work), and the results (export records, or check results: the task's own type, ``task.describe``s them)."""

    task: Task
    pairs: list[tuple[str, str]]
    notes: list[str]
    results: list[Any]


def _options(task: Task, run: Path, action: str, given: dict[str, Any]) -> dict[str, Any]:
    takes = task.options(action)
    for k, v in given.items():
        if k not in OPTION_DEFAULTS:
            raise TypeError(f"unknown {action} option {k}")
        if k not in takes and v != OPTION_DEFAULTS[k]:
            flag = FLAGS.get(k, "--" + k.replace("_", "-"))
            other = "semantic" if task.name == "instance" else "instance"
            raise UsageError(f"{flag} applies to {other} runs; '{run}' is {'an' if task.name[0] in 'aeiou' else 'a'} "
                             f"{task.name} run ({task.describe_options(action)})")
    return {k: v for k, v in given.items() if k in takes}


def export(run: Path, targets: str, precisions: str | None = None, log: Callable[[str], None] = print,
           **options: Any) -> Outcome:
    """Export ``run`` to every pair of ``--target targets --precision precisions``; the results are the records."""
    return _step("export", run, targets, precisions, log, options)


def check(run: Path, targets: str, precisions: str | None = None, log: Callable[[str], None] = print,
          **options: Any) -> Outcome:
    """Check every existing export of the pairs against the task's reference; writes each parity.json."""
    return _step("check", run, targets, precisions, log, options)


def _step(action: str, run: Path, targets: str, precisions: str | None, log: Callable[[str], None],
          options: dict[str, Any]) -> Outcome:
    from exporters import TARGETS

    task = task_of(run)
    table = task.precisions()
    for item in targets.split(","):
        name = item.partition(":")[0].strip()
        if name not in table and name in TARGETS and TARGETS[name].graph_refusal:
            raise UsageError(TARGETS[name].graph_refusal)  # a target that measured why this task's graph has none
    pairs, notes = export_pairs(targets, precisions, table)
    opts = _options(task, run, action, options)
    for note in notes:
        log(f"note: {note}")
    if action == "export":
        return Outcome(task, pairs, notes, _export(task, Path(run), pairs, log, opts))
    return Outcome(task, pairs, notes, task.check(Path(run), pairs, log=log, **opts))


def _export(task: Task, run: Path, pairs: list[tuple[str, str]], log: Callable[[str], None],
            opts: dict[str, Any]) -> list[Any]:
    """The task's exports, except a semantic run's int8 with logits output of TFLite, which climbs the int8 ladder
    (:mod:`edgeseg.quantize.ladder`), and of ExecuTorch, whose full int8 falls back to the one mask-metric search
    (:mod:`edgeseg.quantize.executorch_int8`) — unless ``--int8-route direct`` asks for the target's own int8 alone."""
    from edgeseg.core.registry import check_choice
    from edgeseg.quantize import executorch_int8
    from edgeseg.quantize.ladder import ROUTES, export_int8

    route, max_float_macs = opts.pop("int8_route", "ladder"), opts.pop("max_float_macs", 10.0)
    check_choice(route, list(ROUTES), "--int8-route")
    measured = [p for p in pairs if p == ("tflite", "int8")
                or (p == ("executorch", "int8") and opts.get("input_kind", "image") == "image")] \
        if task.name == "semantic" and route == "ladder" and opts.get("output", "logits") == "logits" else []
    rest = [p for p in pairs if p not in measured]
    done = dict(zip(rest, task.export(run, rest, log=log, **opts))) if rest else {}
    weights = opts.get("weights", "auto")
    weights = None if weights == "auto" else weights
    for pair in measured:
        if pair[0] == "tflite":
            done[pair] = export_int8(run, opts.get("input_kind", "image"), opts.get("calibration", 100), weights, log,
                                     max_float_macs)
        else:
            done[pair] = executorch_int8.export_int8(run, opts.get("calibration", 100), weights, log, max_float_macs)
    return [done[p] for p in pairs]
