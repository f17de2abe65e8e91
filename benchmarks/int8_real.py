"""int8 on real street scenes: every int8 route on CamVid, per architecture, with size, latency and time taken.

For each model: train with ``edgeseg train`` on CamVid at 256 px (or reuse ``--out/<model>`` when it holds a
checkpoint), then
  default     — ``edgeseg export --target tflite --precision int8``: the int8 ladder (full-int8 candidates checked on
                the validation split, the fastest that passes kept, else mixed precision; ``edgeseg.quantize.ladder``),
  direct      — the same with ``--int8-route direct`` (the target's own int8: ai-edge-quantizer, not equalized, not measured),
  ptq         — ``edgeseg quantize --method ptq --targets tflite`` (NNCF-adapted weights, then the target's int8),
  aeq         — ``edgeseg quantize --method aeq`` (ai-edge-quantizer on the fp32 TFLite file),
  aeq-mixed   — the same with ``--mixed-precision`` (ops kept float ranked by the validation mask mIoU, at most
                ``--max-float-macs`` % of the multiply-adds in float),
  pt2e        — ``edgeseg quantize --method pt2e --mixed-precision`` (QAT on LiteRT's int8 grid, converted by
                litert-torch: the file is the fine-tuned fake-quant model; ``--pt2e-epochs``, ``--pt2e-lr``),
  pt2e-mixed  — the same run's mix: activation tensors left in float, ranked by the validation mask mIoU of the
                fake-quant graph, at most ``--max-float-macs`` % of the multiply-adds in float,
  coreml-w8a8 — ``edgeseg export --target coreml --precision w8a8`` checked by reference execution (off macOS).
``--equalize off|weights|activations`` sets cross-layer equalization for the quantize routes (ptq, aeq, pt2e;
default: ``edgeseg quantize``'s).
Figures: pixel agreement % and mask mIoU against the float PyTorch model, dataset-mIoU drop in points, the class
whose IoU fell most (points), file size, LiteRT/XNNPACK latency (median of 20, ``--threads``) beside the fp32 file's, and seconds taken by the route.

The CamVid *test* split is not in ``../shared``: the script builds a SegNet-layout folder whose test split is the
val split, so the checks run on val — the same images the mixed-precision search tunes on (an optimistic figure
for that route; the issue's test-split figures are measured elsewhere).

    python benchmarks/int8_real.py [--models lraspp,deeplabv3plus,unet] [--epochs 15] [--equalize weights]
                                   [--out runs/int8-real]
"""

from __future__ import annotations

import argparse
import json
import os
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

    from edgeseg.core.latency import measure_latency
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
    ap.add_argument("--pt2e-epochs", type=int, help="default: edgeseg quantize's")
    ap.add_argument("--pt2e-lr", type=float, help="default: edgeseg quantize's")
    ap.add_argument("--routes", default="default,direct,ptq,aeq,aeq-mixed,pt2e,coreml-w8a8",
                    help="comma-separated subset of the routes above (pt2e also yields its pt2e-mixed row)")
    ap.add_argument("--equalize", choices=("off", "weights", "activations"),
                    help="cross-layer equalization for the quantize routes (ptq, aeq, aeq-mixed, pt2e; default: "
                    "edgeseg quantize's, weights for aeq and off for the others)")
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
        routes = a.routes.split(",")
        for route, extra in (("default", []), ("direct", ["--int8-route", "direct"])):
            if route not in routes:
                continue  # both write tflite-int8: each is checked before the next replaces it
            _, _, s = _edgeseg("export", str(run), "--target", "tflite", "--precision", "int8", *extra, check=True)
            _, p, _ = _edgeseg("check", str(run), "--target", "tflite", "--precision", "int8")
            rec = json.loads((run / "export" / "tflite-int8" / "export.json").read_text())
            lat = _latency(run / "export" / "tflite-int8" / "model.tflite", a.threads)
            ladder = rec["details"].get("ladder") or {}
            kept = next((t for t in ladder.get("tried", []) if t["name"] == ladder.get("chosen")), {})
            res[route] = {"parity": p, "dir": "tflite-int8", "seconds": s, "latency_ms": lat,
                          "kept": ladder.get("chosen"), "float_macs_pct": kept.get("float_macs_pct")}
            if ladder:  # what the ladder tried on the validation split, before the direct file replaces it
                (a.out / f"{name}-ladder.json").write_text(json.dumps(ladder, indent=2))
                for t in ladder["tried"]:
                    v = t["validation"]
                    print(f"  ladder {t['name']} (rung {t['rung']}): {v['pixel_agreement']:.2f} % / "
                          f"{v['mask_miou']:.3f} on val, {t['latency_ms']:.1f} ms, {t['seconds']:.0f} s, "
                          f"{'passes' if t['passed'] else 'fails'}", flush=True)
        pt2e_args = [*(["--epochs", str(a.pt2e_epochs)] if a.pt2e_epochs is not None else []),
                     *(["--lr", str(a.pt2e_lr)] if a.pt2e_lr is not None else [])]
        # route -> quantize arguments, and the rows it yields (row name -> export directory)
        quantize_routes = {
            "ptq": (["--method", "ptq", "--targets", "tflite"], {"ptq": "tflite-int8-ptq"}),
            "aeq": (["--method", "aeq"], {"aeq": "tflite-int8-aeq"}),
            "aeq-mixed": (["--method", "aeq", "--mixed-precision", "--max-float-macs", str(a.max_float_macs)],
                          {"aeq-mixed": "tflite-int8-aeq-mixed"}),
            # one QAT run writes the full int8 file and, when it misses on validation, the searched mix
            "pt2e": (["--method", "pt2e", *pt2e_args, "--mixed-precision", "--max-float-macs", str(a.max_float_macs)],
                     {"pt2e": "tflite-int8-pt2e", "pt2e-mixed": "tflite-int8-pt2e-mixed"})}
        mixed: dict[str, dict] = {}
        for route, (extra, dirs) in quantize_routes.items():
            if route not in routes:
                continue
            _, _, s = _edgeseg("quantize", str(run), *extra, *(["--equalize", a.equalize] if a.equalize else []))
            for row, d in dirs.items():
                pj = run / "export" / d / "parity.json"
                res[row] = {"parity": json.loads(pj.read_text()) if pj.exists() else None, "dir": d, "seconds": s}
            if "--mixed-precision" in extra:
                qj = run / "export" / f"quantize-{extra[1]}.json"
                mixed[f"{extra[1]}-mixed"] = (json.loads(qj.read_text()).get("mixed") or {}) if qj.exists() else {}
        if "coreml-w8a8" in routes:
            _, _, s = _edgeseg("export", str(run), "--target", "coreml", "--precision", "w8a8")
            _, p, _ = _edgeseg("check", str(run), "--target", "coreml", "--precision", "w8a8")
            res["coreml-w8a8"] = {"parity": p, "dir": "coreml-w8a8", "seconds": s}
        for route, r in res.items():
            p = r["parity"] or {}
            f = run / "export" / r["dir"] / ("model.tflite" if route != "coreml-w8a8" else "model.mlpackage")
            size = path_size(f) if f.exists() else None
            lat = r.get("latency_ms") or (_latency(f, a.threads) if f.suffix == ".tflite" and f.exists() else None)
            m = mixed.get(route, {})
            if route in mixed and m.get("needed") is False:  # full int8 passed where it was searched
                rows.append({"model": name, "route": route, "agreement": None, "mask_miou": None, "drop": None,
                             "status": "not needed", "size_mb": None, "latency_ms": None, "fp32_ms": fp32_ms,
                             "seconds": round(r["seconds"], 1), "reference_miou": None, "float_macs_pct": None,
                             "worst_class": None, "kept": None})
                continue
            if r.get("float_macs_pct") is not None:
                m = {**m, "float_macs_pct": r["float_macs_pct"]}
            rows.append({"model": name, "route": route, "agreement": p.get("pixel_agreement"),
                         "worst_class": p.get("worst_class"), "kept": r.get("kept"),
                         "mask_miou": p.get("mask_miou"), "drop": p.get("miou_drop"), "status": p.get("status"),
                         "size_mb": size / 1e6 if size else None, "latency_ms": lat, "fp32_ms": fp32_ms,
                         "seconds": round(r["seconds"], 1), "reference_miou": p.get("reference_miou"),
                         "float_macs_pct": m.get("float_macs_pct")})
            print(json.dumps(rows[-1]), flush=True)
    from int8_speed import cpu_name

    cpu = cpu_name()
    print(f"\nCamVid val ({a.image_size} px), {os.cpu_count()} cores, {cpu}; LiteRT XNNPACK {a.threads} threads")
    print("| model | route | agreement % | mask mIoU | mIoU drop (pt) | worst class (pt) | MB | int8 / fp32 ms | "
          "seconds | status |")
    print("|---|---|---:|---:|---:|---|---:|---|---:|---|")
    f = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        route = r["route"] + (f" ({r['float_macs_pct']} % MACs float)" if r["float_macs_pct"] is not None else "")
        route += f" (kept {r['kept']})" if r.get("kept") else ""
        if a.equalize and r["route"] not in ("default", "direct", "coreml-w8a8"):
            route += f", --equalize {a.equalize}"
        lat = "—" if r["latency_ms"] is None else f"{r['latency_ms']:.1f} / {r['fp32_ms']:.1f}"
        drop = None if r["drop"] is None else 100 * r["drop"]
        w = r.get("worst_class")
        worst = "—" if not w else f"{w['name']} {100 * w['change']:+.2f}"
        print(f"| {r['model']} | {route} | {f(r['agreement'], '.2f')} | {f(r['mask_miou'], '.3f')} | "
              f"{f(drop, '+.2f')} | {worst} | {f(r['size_mb'], '.2f')} | {lat} | {r['seconds']:.0f} | {r['status']} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()
