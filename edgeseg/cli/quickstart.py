"""``edgeseg quickstart``: the main job on the embedded data (train, export, check, report, bundle)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeseg.cli.common import EPILOG, common, exit_code
from edgeseg.core.errors import EXIT_FAILURE, EXIT_OK

def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("quickstart", help="the main job on the embedded data", epilog=EPILOG, formatter_class=fmt,
                       description="Train LR-ASPP MobileNetV3 on the embedded synthetic data, export TFLite "
                       "fp32/fp16/int8 (+ int8 with pixel input) and Core ML fp16/int8, check parity, write the "
                       "report and the app bundle (OUTPUT/dist).")
    common(p)
    p.add_argument("-o", "--output", type=Path, default=Path("runs/quickstart"))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--fresh", action="store_true", help="delete an existing quickstart run first")


def run(a: argparse.Namespace) -> int:
    from edgeseg.steps.quickstart import quickstart
    from edgeseg.tasks.semantic.text import describe_parity

    results = quickstart(a.output, epochs=a.epochs, fresh=a.fresh, quiet=a.quiet, log=print)
    for r in results:
        print(describe_parity(r))
    print(f"\nreport: {a.output / 'report.md'} (and report.json, report.html)")
    if (a.output / "dist" / "manifest.json").exists():
        print(f"app bundle: {a.output / 'dist'} (android/, ios/, manifest.json, README.md)")
    code = exit_code([r.status for r in results])
    # Core ML cannot run on Linux: quickstart says so in its output and report, and that alone does not
    # fail the main job; a parity failure does.
    return EXIT_FAILURE if code == EXIT_FAILURE else EXIT_OK
