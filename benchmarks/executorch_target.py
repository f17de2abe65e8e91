"""ExecuTorch beside LiteRT on the same runs: parity, latency and XNNPACK delegation of each .pte.

For every RUN: exports ExecuTorch fp32 + int8 (and TFLite fp32 + int8 when the run has none yet), checks them on
the run's test split (``edgeseg check``: the same records and gates), then times each file with the same loop
(batch 1, ``--threads`` threads, 5 warm-up calls, then the median of ``--runs`` calls, alternating the files so
that machine load hits them alike) and prints one table.

    python benchmarks/executorch_target.py runs/quickstart /tmp/cv/lraspp --limit 101

Targets (issue 38): ExecuTorch fp32 agreement 100 %; int8 parity at least the best TFLite int8's; fp32 latency
<= 1.1x LiteRT fp32; int8 <= 0.8x its fp32; every op delegated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ensure(run: Path, target: str, precisions: list[str], limit: int | None) -> None:
    from edgeseg.cli import main

    missing = [p for p in precisions if not (run / "export" / f"{target}-{p}" / "export.json").exists()]
    if missing:
        assert main(["export", str(run), "--target", target, "--precision", ",".join(missing), "-q"]) == 0
    stale = [p for p in precisions if not (run / "export" / f"{target}-{p}" / "parity.json").exists()]
    if stale:
        args = ["check", str(run), "--target", target, "--precision", ",".join(stale), "-q"]
        main(args + (["--limit", str(limit)] if limit else []))  # a failed gate is a figure here, not an error


def _time(runners: dict, x: np.ndarray, runs: int) -> dict[str, float]:
    for r in runners.values():
        for _ in range(5):
            r(x)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(runs):
        for k, r in runners.items():
            t = time.perf_counter()
            r(x)
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def measure(run: Path, threads: int, runs: int, limit: int | None) -> list[dict]:
    from exporters import TARGETS

    _ensure(run, "tflite", ["fp32", "int8"], limit)
    _ensure(run, "executorch", ["fp32", "int8"], limit)
    names = ["tflite-fp32", "tflite-int8", "executorch-fp32", "executorch-int8"]
    recs = {n: json.loads((run / "export" / n / "export.json").read_text()) for n in names}
    runners = {n: TARGETS[recs[n]["target"]].load(run / recs[n]["path"], threads=threads) for n in names}
    pre = recs["tflite-fp32"]["preprocess"]
    x = np.random.default_rng(0).normal(size=(1, 3, pre["height"], pre["width"])).astype(np.float32)
    ms = _time(runners, x, runs)
    rows = []
    for n in names:
        par = json.loads((run / "export" / n / "parity.json").read_text())
        d = recs[n].get("details", {}).get("delegation") or {}
        w = par.get("worst_class") or {}
        rows.append({"run": run.name, "arch": recs[n].get("model") or "", "size": f"{pre['height']}x{pre['width']}",
                     "export": n, "mb": recs[n]["size_bytes"] / 1e6, "status": par["status"],
                     "images": par.get("images"), "agreement": par.get("pixel_agreement"),
                     "mask_miou": par.get("mask_miou"),
                     "worst": f"{w['name']} {w['change'] * 100:+.2f}" if w else "—", "ms": ms[n],
                     "seconds": recs[n]["seconds"],
                     "delegation": f"{d['partitions']} part., {d['delegated_ops']} in XNNPACK, "
                                   f"{d['fallback_ops']} fallback" if d else "—"})
    base = {r["export"]: r["ms"] for r in rows}
    for r in rows:
        r["vs"] = (f"{r['ms'] / base['tflite-fp32']:.2f}x LiteRT fp32" if r["export"] == "executorch-fp32" else
                   f"{r['ms'] / base['executorch-fp32']:.2f}x its fp32" if r["export"] == "executorch-int8" else
                   f"{r['ms'] / base['tflite-fp32']:.2f}x fp32" if r["export"] == "tflite-int8" else "")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs-per-file", type=int, default=50)
    ap.add_argument("--limit", type=int, help="test images for the checks (default: the whole test split)")
    a = ap.parse_args()
    from edgeseg.core.versions import hardware

    print(f"# {hardware()['cpu']}, {a.threads} threads")
    print("| run | input | export | MB | parity | agreement % | mask mIoU | worst class (pt) | latency ms | ratio | "
          "export s | delegation |")
    print("|---|---|---|---:|---|---:|---:|---|---:|---|---:|---|")
    for run in a.runs:
        for r in measure(run, a.threads, a.runs_per_file, a.limit):
            print(f"| {r['run']} | {r['size']} | {r['export']} | {r['mb']:.2f} | {r['status']} ({r['images']}) | "
                  f"{r['agreement']:.3f} | {r['mask_miou']:.4f} | {r['worst']} | {r['ms']:.2f} | {r['vs']} | "
                  f"{r['seconds']:.0f} | {r['delegation']} |", flush=True)


if __name__ == "__main__":
    main()
