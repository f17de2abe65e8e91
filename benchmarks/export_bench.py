"""Export time, file size and latency per target x precision for the default model.

Side by side with PyTorch eager and onnxruntime on the same model and input. Prints a table (and
``--json``). Uses the quickstart run (``runs/quickstart``), training it first if it is missing.

    python benchmarks/export_bench.py [--run runs/quickstart] [--runs 50] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from edgeseg.core.latency import measure_latency, torch_runner
from edgeseg.tasks.semantic.run import export_run
from edgeseg.steps.quickstart import QUICKSTART_CONFIG
from edgeseg.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from edgeseg.train.loop import train
from edgeseg.core.versions import hardware, package_versions

CASES = [("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"),
         ("coreml", "fp32"), ("coreml", "fp16"), ("coreml", "int8"), ("coreml", "palettize6")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/quickstart"))
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from exporters import TARGETS

    if not (a.run / CHECKPOINT_NAME).exists():
        print(f"no model in {a.run}: training the quickstart model first", file=sys.stderr)
        train(QUICKSTART_CONFIG, a.run, log=lambda s: print(s, file=sys.stderr))
    ck = load_checkpoint(a.run)
    shutil.rmtree(a.run / "export" / ".cache", ignore_errors=True)  # time the full conversion once
    x = np.random.default_rng(0).standard_normal((1, 3, ck.preprocess.height, ck.preprocess.width)).astype(np.float32)
    model = ck.build_model()
    rows = []
    for t in a.threads:
        lat = measure_latency(torch_runner(model, t), x, a.runs, a.warmup)
        rows.append({"target": "pytorch", "precision": "fp32", "export_s": None,
                     "size_mb": sum(v.numel() * v.element_size() for v in ck.weights.values()) / 1e6,
                     "threads": t, "runtime": f"PyTorch {package_versions().get('torch')} eager", **lat})
    for target, precision in CASES:
        rec = export_run(a.run, target, precision, log=lambda s: None)
        base = {"target": target, "precision": precision, "export_s": rec["seconds"],
                "size_mb": rec["size_bytes"] / 1e6}
        ok, why = TARGETS[target].can_run()
        if not ok:
            rows.append({**base, "threads": None, "runtime": why})
            continue
        for t in a.threads:
            runner = TARGETS[target].load(a.run / rec["path"], threads=t)
            rows.append({**base, "threads": t, "runtime": runner.runtime, **measure_latency(runner, x, a.runs, a.warmup)})
    if a.json:
        print(json.dumps({"hardware": hardware(), "versions": package_versions(), "rows": rows}, indent=2))
        return 0
    hw = hardware()
    print(f"{ck.config.model} {x.shape[2]}x{x.shape[3]}, {hw['cpu']} ({hw['cores']} cores), {a.runs} runs "
          f"after {a.warmup} warm-up\n")
    print(f"{'target':8s} {'precision':10s} {'export s':>8s} {'size MB':>8s} {'thr':>3s} "
          f"{'median ms':>9s} {'p90 ms':>7s}  runtime")
    for r in rows:
        exp = f"{r['export_s']:.1f}" if r["export_s"] is not None else "—"
        if "median_ms" in r:
            print(f"{r['target']:8s} {r['precision']:10s} {exp:>8s} {r['size_mb']:8.2f} {r['threads']:3d} "
                  f"{r['median_ms']:9.2f} {r['p90_ms']:7.2f}  {r['runtime']}")
        else:
            print(f"{r['target']:8s} {r['precision']:10s} {exp:>8s} {r['size_mb']:8.2f} {'—':>3s} "
                  f"{'—':>9s} {'—':>7s}  not run: {r['runtime']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
