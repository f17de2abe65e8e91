"""``edgeseg report``: join training metrics, exports, parity and latency into report.json, report.md and a
self-contained report.html (plots and mask overlays, :mod:`edgeseg.steps.report.html`), for a run of any task.

The task (:mod:`edgeseg.tasks`) says what its model and exports are and how its figures read; this step times the
reference and every export on one input, adds the CI gates (a budget and a baseline: semantic runs), validates the
report against ``edgeseg.report/1`` and writes the three files as one set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from edgeseg.core.errors import UsageError, worst_status
from edgeseg.core.latency import measure_latency
from edgeseg.core.versions import hardware, package_versions
from edgeseg.tasks import run_dir, task_of

SCHEMA = "edgeseg.report/1"


def build_report(run: Path, runs: int = 20, warmup: int = 3, threads: int = 2,
                 log: Callable[[str], None] = print, budget: Path | None = None,
                 baseline: Path | None = None, max_miou_drop: float | None = None,
                 overlays: int = 3, max_class_drop: float | None = None) -> dict[str, Any]:
    """Measure every export of ``run`` and write ``report.json``, ``report.md`` and ``report.html`` into it; with
    ``budget`` (YAML) and/or ``baseline`` (an earlier report.json) add their verdicts
    (:mod:`edgeseg.steps.report.budget`). ``max_miou_drop`` and ``max_class_drop`` are budget defaults for every
    export without its own line (they make a budget when there is no file). ``overlays``: test images drawn per
    export."""
    from edgeseg.steps.report.budget import (check_budget, compare_baseline, load_baseline, load_budget,
                                             render_markdown as render_gates)
    from exporters import ExporterError

    task = task_of(run)
    drops = {k: v for k, v in (("max_miou_drop", max_miou_drop), ("max_class_drop", max_class_drop)) if v is not None}
    if task.name != "semantic" and (budget or baseline or drops):
        raise UsageError(f"--budget, --baseline, --max-miou-drop and --max-class-drop apply to semantic runs; '{run}' "
                         f"is a {task.name} run")
    limits = load_budget(budget) if budget is not None else None
    if drops:
        from edgeseg.tasks.semantic.parity import thresholds_for

        thresholds_for("fp32", **drops)  # the check's range check: names the flag
        limits = limits or {}
        limits["defaults"] = {**limits.get("defaults", {}), **{k: float(v) for k, v in drops.items()}}
    previous = load_baseline(baseline, SCHEMA) if baseline is not None else None
    subject = task.report(run_dir(run), threads)
    run = subject.run
    entries = subject.entries()
    log(f"timing PyTorch ({runs} runs) ...")
    rows: list[dict[str, Any]] = [subject.reference_row(runs, warmup, threads)]
    for entry in entries:
        row = subject.row(entry)
        try:
            runner, why = subject.runner(entry, threads)
            if runner is None:
                row["latency"] = {"not_measured": why}
            elif getattr(runner, "is_reference", False) or "reference execution" in getattr(runner, "runtime", ""):
                row["latency"] = {"not_measured": f"{runner.runtime} checks {task.outputs}; its speed is not "
                                                  f"a device's (the Core ML runtime needs macOS)"}
            else:
                log(f"timing {row['target']} {row['precision']} ({runs} runs after {warmup} warm-up) ...")
                row["latency"] = {**measure_latency(runner, subject.example, runs, warmup),
                                  "runtime": getattr(runner, "runtime", row["target"]), "threads": threads}
        except ExporterError as e:
            row["latency"] = {"error": str(e)}
        rows.append(row)
    report: dict[str, Any] = {"schema": SCHEMA, **subject.fields, "run": str(run), "model": subject.model,
                              "training": subject.training, "hardware": hardware(), "versions": package_versions(),
                              "results": rows}
    verdicts = []
    if limits is not None:
        lines = check_budget(report, limits)
        flags = " ".join("--" + k.replace("_", "-") for k in drops)
        report["budget"] = {"file": str(budget) if budget is not None else flags, "lines": lines,
                            "status": worst_status(b["status"] for b in lines)}
        verdicts.append(report["budget"]["status"])
    if previous is not None:
        diff = compare_baseline(report, previous)
        report["baseline"] = {"file": str(baseline), "rows": diff,
                              "status": "failed" if any(d["regressions"] for d in diff) else "passed"}
        verdicts.append(report["baseline"]["status"])
    report["status"] = subject.status(rows, verdicts)
    from edgeseg.core.schemas import problems

    wrong = problems(report, "report-1")
    if wrong:  # a bug of ours: a CI must never read a report that breaks its documented schema
        raise RuntimeError("report.json does not match schemas/report-1.schema.json: " + "; ".join(wrong[:5]))
    from edgeseg.core.atomic import atomic_path
    from edgeseg.steps.report.html import write_html

    gates = render_gates((report.get("budget") or {}).get("lines") if "budget" in report else None,
                         (report.get("baseline") or {}).get("rows") if "baseline" in report else None)
    log(f"drawing mask overlays of {overlays} test images per export ...")
    # the three files as one set: each goes to a temporary name, and only when all are written are they renamed,
    # so a failure (a full disk) leaves the previous report.json/md/html together
    with atomic_path(run / "report.json") as tj, atomic_path(run / "report.md") as tm, \
            atomic_path(run / "report.html") as th:
        tj.write_text(json.dumps(report, indent=2) + "\n")
        tm.write_text(subject.markdown(report, gates))
        write_html(report, subject, th, overlays, threads)
    return report
