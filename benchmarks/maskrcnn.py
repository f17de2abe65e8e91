"""Mask R-CNN export graph: file size, latency and instance parity per target x precision at a given size.

Trains a Mask R-CNN on the embedded instance data at ``--size`` (or takes ``--run``), exports every target and
precision, and prints size, export time, median latency (this CPU) and the instance-parity figures (matched
mask IoU, missed/extra, mask AP of reference and export).

    python benchmarks/maskrcnn.py --size 512 [--backbone mobilenet_v3_large|resnet50] [--epochs 1]
        [--cases onnx:fp32,tflite:fp32,tflite:fp16,tflite:int8,coreml:fp16] [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeseg.core.latency import measure_latency
from edgeseg.tasks.instance.check import GraphCounts
from edgeseg.tasks.instance.run import export_run, train_run
from edgeseg.core.versions import hardware


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--backbone", default="mobilenet_v3_large")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-images", type=int, default=32)
    ap.add_argument("--run", type=Path, help="an existing `edgeseg maskrcnn train` run (skips training)")
    ap.add_argument("--cases", default="onnx:fp32,tflite:fp32,tflite:fp16,tflite:int8,coreml:fp16")
    ap.add_argument("--images", type=int, default=4, help="test images for parity")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    run = a.run or Path(tempfile.mkdtemp(prefix="edgeseg-maskrcnn-bench-")) / "run"
    if a.run is None:
        rec = train_run(run, f"synthetic?train={a.train_images}&test={a.images}", a.backbone, a.size, a.epochs,
                        limit=a.train_images, eval_images=a.images, log=lambda s: None)
        print(f"trained {rec['steps']} steps in {rec['seconds']} s; test mask AP {rec['ap']['mask']['AP']:.4f}",
              file=sys.stderr)
    rows = []
    x = np.random.default_rng(0).random((1, 3, a.size, a.size), dtype=np.float32)
    for case in a.cases.split(","):
        target, precision = case.split(":")
        rec = export_run(run, target, precision, GraphCounts(), a.images, log=lambda s: None)
        from edgeseg.tasks.instance.check import load_runner

        runner = load_runner(target, Path(rec["path"]))
        lat = measure_latency(runner, x, runs=a.runs, warmup=1)
        p = rec["parity"]
        rows.append({"target": target, "precision": precision, "size_mb": round(rec["size_bytes"] / 1e6, 2),
                     "export_s": rec["export_seconds"], "latency_ms": round(lat["median_ms"], 1),
                     "runtime": p["runtime"], "status": p["status"], "matched": p["matched"], "missed": p["missed"],
                     "extra": p["extra"], "mask_iou": p["mask_iou_mean"], "box_iou": p["box_iou_mean"],
                     "mask_ap_ref": p["reference_ap"].get("mask"), "mask_ap_export": p["exported_ap"].get("mask")})
    if a.json:
        print(json.dumps({"size": a.size, "backbone": a.backbone, "hardware": hardware(), "rows": rows}, indent=2))
        return 0
    print(f"Mask R-CNN {a.backbone} {a.size}x{a.size}, {GraphCounts().to_json()}")
    print(f"{'target':8} {'prec':12} {'MB':>7} {'export s':>8} {'ms':>8} {'parity':12} {'match/miss/extra':>16} "
          f"{'maskIoU':>7} {'AP ref/exp':>13}")
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        print(f"{r['target']:8} {r['precision']:12} {r['size_mb']:7.2f} {r['export_s']:8.1f} {r['latency_ms']:8.1f} "
              f"{r['status']:12} {r['matched']:>5}/{r['missed']}/{r['extra']:<6} {f(r['mask_iou']):>7} "
              f"{f(r['mask_ap_ref'])}/{f(r['mask_ap_export'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
