"""int8 on real street scenes: every int8 route on CamVid, per architecture, with size, latency and time taken.

For each model: train with ``edgeseg train`` on CamVid at 256 px (or reuse ``--out/<model>`` when it holds a
checkpoint), then
  converter   — ``edgeseg export --target tflite --precision int8`` (TF Lite converter, min-max calibration),
  ptq         — ``edgeseg quantize --method ptq --targets tflite`` (NNCF-adapted weights, converter int8),
  aeq         — ``edgeseg quantize --method aeq`` (ai-edge-quantizer on the fp32 TFLite file),
  aeq-mixed   — the same with ``--mixed-precision`` (ops kept float ranked by the validation mask mIoU, at most
                ``--max-float-macs`` % of the multiply-adds in float),
  coreml-w8a8 — ``edgeseg export --target coreml --precision w8a8`` checked by reference execution (off macOS).
Figures: pixel agreement % and mask mIoU against the float PyTorch model, dataset-mIoU drop in points, file size,
LiteRT/XNNPACK latency (median of 20, ``--threads``) beside the fp32 file's, and seconds taken by the route.

The CamVid *test* split is not in ``../shared``: the script builds a SegNet-layout folder whose test split is the
val split, so the checks run on val — the same images the mixed-precision search tunes on (an optimistic figure
for that route; the issue's test-split figures are measured elsewhere).

    python benchmarks/int8_real.py [--models lraspp,deeplabv3plus,unet] [--epochs 15] [--out runs/int8-real]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODELS = {"lraspp": ["--model", "lraspp"],
          "deeplabv3plus": ["--model", "deeplabv3plus", "--model-opt", "encoder=mobilenet_v2"],
          "unet": ["--model", "unet", "--model-opt", "base=16"]}


def _edgeseg(*args: str, check: bool = False) -> tuple[int, dict | None, float]:
    t0 = time.time()
    json_flag = [] if args[0] == "train" else ["--json"]  # train writes metrics.json, it prints no JSON
    p = subprocess.run([sys.executable, "-m", "edgeseg", *args, *json_flag, "-q"], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"edgeseg {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    try:
        out = json.loads(p.stdout) if p.stdout.strip() else None
    except json.JSONDecodeError:
        out = None
    if p.returncode not in (0, 1):
        print(f"edgeseg {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()[-400:]}", file=sys.stderr)
    return p.returncode, out, time.time() - t0


def _camvid(root: Path, camvid: Path) -> Path:
    for sub in ("train", "trainannot", "val", "valannot"):
        if not (camvid / sub).is_dir():
            raise SystemExit(f"{camvid} has no {sub}/ folder (expected the SegNet CamVid layout)")
    for sub in ("train", "trainannot", "val", "valannot"):
        (root / sub).symlink_to((camvid / sub).resolve())
    (root / "test").symlink_to((camvid / "val").resolve())
    (root / "testannot").symlink_to((camvid / "valannot").resolve())
    return root


def _latency(path: Path, threads: int) -> float:
    import numpy as np

    from edgeseg.bench import measure_latency
    from exporters.tflite import load

    r = load(path, threads=threads)
    x = np.zeros(r.input_shape_nchw, np.float32)
    return measure_latency(r, x, 20, 3)["median_ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--camvid", type=Path, default=SHARED / "data" / "camvid-trainval")
    ap.add_argument("--models", default="lraspp,deeplabv3plus,unet")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-float-macs", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("runs/int8-real"))
    a = ap.parse_args()
    from exporters.base import path_size

    tmp = tempfile.TemporaryDirectory()
    data = f"camvid:{_camvid(Path(tmp.name), a.camvid)}"
    rows = []
    for name in a.models.split(","):
        run = a.out / name
        if not (run / "checkpoint.pt").exists():
            t0 = time.time()
            _edgeseg("train", *MODELS[name], "--data", data, "--image-size", str(a.image_size), "--epochs",
                     str(a.epochs), "-o", str(run), check=True)
            print(f"{name}: trained in {time.time() - t0:.0f} s", flush=True)
        _edgeseg("export", str(run), "--target", "tflite", "--precision", "fp32", check=True)
        fp32_ms = _latency(run / "export" / "tflite-fp32" / "model.tflite", a.threads)
        res: dict[str, dict] = {}
        _, _, s = _edgeseg("export", str(run), "--target", "tflite", "--precision", "int8", check=True)
        _, p, _ = _edgeseg("check", str(run), "--target", "tflite", "--precision", "int8")
        res["converter"] = {"parity": p, "dir": "tflite-int8", "seconds": s}
        for route, extra in (("ptq", ["--method", "ptq", "--targets", "tflite"]), ("aeq", ["--method", "aeq"]),
                             ("aeq-mixed", ["--method", "aeq", "--mixed-precision", "--max-float-macs",
                                            str(a.max_float_macs)])):
            _, _, s = _edgeseg("quantize", str(run), *extra)
            d = {"ptq": "tflite-int8-ptq", "aeq": "tflite-int8-aeq", "aeq-mixed": "tflite-int8-aeq-mixed"}[route]
            pj = run / "export" / d / "parity.json"
            res[route] = {"parity": json.loads(pj.read_text()) if pj.exists() else None, "dir": d, "seconds": s}
        _, _, s = _edgeseg("export", str(run), "--target", "coreml", "--precision", "w8a8")
        _, p, _ = _edgeseg("check", str(run), "--target", "coreml", "--precision", "w8a8")
        res["coreml-w8a8"] = {"parity": p, "dir": "coreml-w8a8", "seconds": s}
        mixed = json.loads((run / "export" / "quantize-aeq.json").read_text()).get("mixed") or {}
        for route, r in res.items():
            p = r["parity"] or {}
            f = run / "export" / r["dir"] / ("model.tflite" if route != "coreml-w8a8" else "model.mlpackage")
            size = path_size(f) if f.exists() else None
            lat = _latency(f, a.threads) if f.suffix == ".tflite" and f.exists() else None
            if route == "aeq-mixed" and mixed.get("needed") is False:  # full int8 passed where it was searched
                rows.append({"model": name, "route": route, "agreement": None, "mask_miou": None, "drop": None,
                             "status": "not needed", "size_mb": None, "latency_ms": None, "fp32_ms": fp32_ms,
                             "seconds": round(r["seconds"], 1), "reference_miou": None, "float_macs_pct": None})
                continue
            rows.append({"model": name, "route": route, "agreement": p.get("pixel_agreement"),
                         "mask_miou": p.get("mask_miou"), "drop": p.get("miou_drop"), "status": p.get("status"),
                         "size_mb": size / 1e6 if size else None, "latency_ms": lat, "fp32_ms": fp32_ms,
                         "seconds": round(r["seconds"], 1), "reference_miou": p.get("reference_miou"),
                         "float_macs_pct": mixed.get("float_macs_pct") if route == "aeq-mixed" else None})
            print(json.dumps(rows[-1]), flush=True)
    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in info if line.startswith("flags"))
        cpu += ", VNNI" if {"avx512_vnni", "avx_vnni"} & set(flags) else ", no VNNI"
    except (OSError, StopIteration):
        pass
    print(f"\nCamVid val ({a.image_size} px), {os.cpu_count()} cores, {cpu}; LiteRT XNNPACK {a.threads} threads")
    print("| model | route | agreement % | mask mIoU | mIoU drop (pt) | MB | int8 / fp32 ms | seconds | status |")
    print("|---|---|---:|---:|---:|---:|---|---:|---|")
    f = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        route = r["route"] + (f" ({r['float_macs_pct']} % MACs float)" if r["float_macs_pct"] is not None else "")
        lat = "—" if r["latency_ms"] is None else f"{r['latency_ms']:.1f} / {r['fp32_ms']:.1f}"
        drop = None if r["drop"] is None else 100 * r["drop"]
        print(f"| {r['model']} | {route} | {f(r['agreement'], '.2f')} | {f(r['mask_miou'], '.3f')} | "
              f"{f(drop, '+.2f')} | {f(r['size_mb'], '.2f')} | {lat} | {r['seconds']:.0f} | {r['status']} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()
