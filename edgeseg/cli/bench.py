"""``edgeseg bench``: size, I/O and latency of any model file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgeseg.cli.common import EPILOG, common, log_of
from edgeseg.core.errors import EXIT_OK, UsageError

def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("bench", help="size, I/O and latency of any model file", epilog=EPILOG, formatter_class=fmt,
                       description="Describe and time a .tflite (LiteRT, XNNPACK on and off), .onnx (onnxruntime), "
                       ".mlpackage (Core ML runtime, macOS only) or edgeseg checkpoint/run (PyTorch eager) at "
                       "several thread counts; hardware and runtime versions are recorded.")
    common(p)
    p.add_argument("model", type=Path, help="model file, .mlpackage, checkpoint .pt or run directory")
    p.add_argument("--threads", default="1,2,4", help="comma-separated thread counts (default %(default)s)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the figures as JSON (schema edgeseg.bench/1)")


def run(a: argparse.Namespace) -> int:
    from edgeseg.steps.bench import bench_model, format_bench

    try:
        threads = tuple(int(t) for t in a.threads.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--threads takes comma-separated integers, got '{a.threads}'") from None
    r = bench_model(a.model, threads, a.runs, a.warmup, log=log_of(a))
    print(json.dumps(r, indent=2) if a.json else format_bench(r))
    return EXIT_OK
