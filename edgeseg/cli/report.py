"""``edgeseg report``: size, latency and parity of every export as report.json/md/html (any task)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgeseg.cli.common import EPILOG, common, exit_code, log_of

def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("report", help="size/latency/parity report of a run", epilog=EPILOG, formatter_class=fmt,
                       description="Time every export of RUN and join sizes, latency and parity into "
                       "RUN/report.json (schema edgeseg.report/1), RUN/report.md and RUN/report.html (plots and "
                       "mask overlays of PyTorch vs each export; instance masks for a Mask R-CNN run).")
    common(p)
    p.add_argument("run", type=Path)
    p.add_argument("--runs", type=int, default=20, help="timed runs per model (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=Path, help="YAML of limits per export (max_size_mb, max_latency_ms, "
                   "min_agreement, max_miou_drop, max_class_drop); exit 1 if one is exceeded, 3 if one could not be measured")
    p.add_argument("--max-miou-drop", type=float, help="budget limit for every export without its own: largest "
                   "dataset mIoU drop from PyTorch (default: the budget's, or none without --budget)")
    p.add_argument("--max-class-drop", type=float, help="budget limit for every export without its own: largest "
                   "drop of any one class's IoU from PyTorch (default: the budget's, or none without --budget)")
    p.add_argument("--baseline", type=Path, help="an earlier report.json: diff table, exit 1 on a regression "
                   "(size +5 %%, latency +15 %%, agreement -0.5 points, dataset mIoU -0.01)")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")


def run(a: argparse.Namespace) -> int:
    from edgeseg.steps.report.build import build_report

    rep = build_report(a.run, a.runs, a.warmup, a.threads, log=log_of(a), budget=a.budget, baseline=a.baseline,
                       max_miou_drop=a.max_miou_drop, max_class_drop=a.max_class_drop)
    print(json.dumps(rep, indent=2) if a.json else (Path(rep["run"]) / "report.md").read_text())
    return exit_code([rep["status"]])
