"""ExecuTorch beside LiteRT on the same runs: parity, latency and XNNPACK delegation of each .pte.

For every RUN: exports ExecuTorch fp32 + int8 (and TFLite fp32 + int8 when the run has none yet), checks them on
the run's test split (``edgeseg check``, again for every file: the same images, records and gates), then times each file with the same loop
(batch 1, ``--threads`` threads, the median of ``--runs-per-file`` calls in three rounds over the files, see
:func:`_time`) and prints one table.

    python benchmarks/executorch_target.py runs/quickstart /tmp/cv/lraspp
    python benchmarks/executorch_target.py --architectures 256   # every architecture, untrained, fp32

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
    # every file checked again on the same test images (a parity.json of an earlier --limit would not compare)
    args = ["check", str(run), "--target", target, "--precision", ",".join(precisions), "-q"]
    main(args + (["--limit", str(limit)] if limit else []))  # a failed gate is a figure here, not an error


def _time(runners: dict, x: np.ndarray, runs: int, rounds: int = 3) -> dict[str, float]:
    """Median ms per file: ``rounds`` rounds over the files, each a block of 5 warm-up calls and ``runs / rounds``
    timed ones. Blocks, not call-by-call alternation: LiteRT's and ExecuTorch's thread pools spin-wait after a call,
    and a pool still spinning slows the other runtime's next call (measured: LiteRT fp32 7.4 ms alternating with
    ExecuTorch, 4.1 ms alone)."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, r in runners.items():
            for _ in range(5):
                r(x)
            for _ in range(max(1, runs // rounds)):
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


def architectures(size: int, threads: int, runs: int, only: list[str] | None = None) -> None:
    """Every registered architecture (default options, 5 classes, untrained, ``size`` px): ExecuTorch fp32 beside
    LiteRT fp32 — max |logit difference| from PyTorch, delegation and latency."""
    import tempfile

    import torch

    from edgeseg.models import MODELS, build_model
    from exporters import TARGETS, ExportOptions
    from exporters.executorch import fallback_text

    print(f"| architecture ({size} px, untrained) | ExecuTorch export s | partitions | ops in XNNPACK | "
          "portable ops | max Δlogit vs PyTorch | ExecuTorch fp32 ms | LiteRT fp32 ms | ratio |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    x = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
    for name in only or MODELS.names():
        torch.manual_seed(0)
        model = build_model(name, 5).eval()
        with torch.no_grad():
            ref = model(torch.from_numpy(x))
        ref = (ref["out"] if isinstance(ref, dict) else ref).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            et = TARGETS["executorch"].export(model, x, ExportOptions("fp32"), Path(tmp))
            (Path(tmp) / "tfl").mkdir()
            tfl = TARGETS["tflite"].export(model, x, ExportOptions("fp32", work_dir=Path(tmp) / "tfl"),
                                           Path(tmp) / "tfl")
            runners = {"et": TARGETS["executorch"].load(et.path, threads=threads),
                       "tfl": TARGETS["tflite"].load(tfl.path, threads=threads)}
            diff = float(np.abs(runners["et"](x) - ref).max())
            ms = _time(runners, x, runs)
        d = et.details["delegation"]
        fallback = fallback_text(d)
        print(f"| {name} | {et.seconds:.0f} | {d['partitions']} | {d['delegated_ops']} | {d['fallback_ops']} "
              f"({fallback}) | {diff:.1e} | {ms['et']:.2f} | {ms['tfl']:.2f} | {ms['et'] / ms['tfl']:.2f}x |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--architectures", type=int, metavar="SIZE",
                    help="instead: every registered architecture, untrained, at SIZE px (fp32 only)")
    ap.add_argument("--only", help="with --architectures: these architectures (comma-separated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs-per-file", type=int, default=50)
    ap.add_argument("--limit", type=int, help="test images for the checks (default: the whole test split)")
    a = ap.parse_args()
    from edgeseg.core.versions import hardware

    print(f"# {hardware()['cpu']}, {a.threads} threads")
    if a.architectures:
        architectures(a.architectures, a.threads, a.runs_per_file, a.only.split(",") if a.only else None)
        return
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
