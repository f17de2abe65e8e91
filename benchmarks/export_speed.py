"""Export speed: edgeseg's one-call export against its floor, on the same model, in cold processes.

For each input size (default 256 and 512 px), on torchvision's LR-ASPP MobileNetV3-Large (random weights, 5
classes: conversion speed does not depend on the weights; the synthetic dataset's validation split for the ladder):

* edgeseg: ``edgeseg export RUN --target tflite,coreml:fp16 --precision fp32,fp16,int8`` -- every TFLite precision
  and Core ML fp16 in one process, cold cache (wall time and peak RSS of that process), twice: with the default int8
  (the ladder: its candidates made *and checked on the validation split*) and with ``--int8-route direct`` (the
  conversions alone);
* the floor: a cold process that imports torch, builds the run's model and writes its ONNX file (what any
  ONNX-based route pays before converting);
* onnx2tf 1.x ``-oiqt`` (the TensorFlow route edgeseg used before): measured when an ``onnx2tf`` 1.x and TensorFlow
  are importable, else reported as not run (edgeseg's install has neither since TFLite left TensorFlow);
* the litert-torch direct route (PyTorch -> TFLite, no ONNX) for fp32 with the same NHWC contract: conversion time,
  agreement with PyTorch and its latency;
* latency (LiteRT + XNNPACK vs onnxruntime, 2 threads, batch 1) of the TFLite fp32 file and the ONNX file.

    python benchmarks/export_speed.py [--sizes 256 512] [--runs 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, int, str]:
    """Run ``cmd``; its wall seconds, peak RSS in GB (of that process, from ``/usr/bin/time``; NaN without it),
    exit code and output tail."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as f:
        measure = ["/usr/bin/time", "-f", "%M", "-o", f.name] if Path("/usr/bin/time").exists() else []
        t0 = time.perf_counter()
        p = subprocess.run([*measure, *cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env)
        wall = time.perf_counter() - t0
        try:
            rss = int(f.read().strip().splitlines()[-1]) / 1e6  # KB
        except (ValueError, IndexError):
            rss = float("nan")
    return wall, rss, p.returncode, p.stdout[-1500:]


def litert_direct(ck, x: np.ndarray, runs: int) -> dict:
    """fp32 TFLite straight from PyTorch with litert-torch (NHWC in and out, like the onnx2tf route)."""
    import torch

    from edgeseg.core.latency import measure_latency
    from exporters.tflite import TFLiteRunner
    from exporters.tflite_pt2e import nhwc

    from exporters.native import preload_triton, quiet_native

    preload_triton()
    import litert_torch

    model = ck.build_model()
    h, w = x.shape[2:]
    t0 = time.perf_counter()
    with quiet_native():  # its progress lines would mix into the table (or the --json document)
        edge = litert_torch.convert(nhwc(model).eval(), (torch.zeros(1, h, w, 3),))
        data = bytes(edge.model_content())
    seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "direct.tflite"
        path.write_bytes(data)
        runner = TFLiteRunner(path, threads=2)
        y = runner(x)
        with torch.no_grad():
            r = model(torch.from_numpy(x)).numpy()
        lat = measure_latency(runner, x, runs, 5)
        size = path.stat().st_size
    return {"seconds": round(seconds, 1), "size_mb": round(size / 1e6, 2),
            "agreement_pct": round(100.0 * float((y.argmax(1) == r.argmax(1)).mean()), 3),
            "max_abs_diff": float(np.abs(y - r).max()), "latency_ms": round(lat["median_ms"], 2)}


FLOOR = """
import sys, time
t0 = time.perf_counter()
import numpy as np
from edgeseg.train.checkpoint import load_checkpoint
from exporters.onnx import write_onnx
ck = load_checkpoint(sys.argv[1])
pre = ck.preprocess
write_onnx(ck.build_model("auto").eval(), np.zeros((1, 3, pre.height, pre.width), np.float32), sys.argv[2])
"""


def onnx2tf_v1(onnx_file: Path, scratch: Path) -> dict:
    """``onnx2tf -oiqt`` of onnx2tf 1.x with TensorFlow, where both are importable; else why not."""
    import importlib.metadata as md

    try:
        version = md.version("onnx2tf")
        md.version("tensorflow")
    except md.PackageNotFoundError as e:
        return {"error": f"not run: {e.name} is not installed (edgeseg's TFLite route needs no TensorFlow)"}
    if not version.startswith("1."):
        return {"error": f"not run: onnx2tf {version} is installed; -oiqt with TensorFlow is onnx2tf 1.x's"}
    scratch.mkdir()
    (scratch / "model.onnx").write_bytes(onnx_file.read_bytes())
    np.save(scratch / "calibration_image_sample_data_20x128x128x3_float32.npy",
            np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))  # else it downloads one
    cli = Path(sys.executable).with_name("onnx2tf")
    wall, rss, code, _ = timed([str(cli), "-i", "model.onnx", "-o", "out", "-oiqt"], scratch)
    return {"seconds": round(wall, 1), "rss_gb": round(rss, 2), "exit": code,
            "files": sorted(p.name for p in (scratch / "out").glob("*.tflite"))}


def one_size(size: int, runs: int, work: Path) -> dict:
    from edgeseg.core.latency import measure_latency
    from edgeseg.steps.importer import import_model
    from edgeseg.train.checkpoint import load_checkpoint
    from exporters.onnx import OnnxRunner
    from exporters.tflite import TFLiteRunner

    run = work / f"lraspp{size}"
    import_model(run, "torchvision:lraspp_mobilenet_v3_large", data="synthetic", num_classes=5, image_size=size,
                 log=lambda s: None)
    ck = load_checkpoint(run)
    row: dict = {"size": size}
    for key, extra in (("edgeseg", []), ("edgeseg_direct", ["--int8-route", "direct"])):
        shutil.rmtree(run / "export", ignore_errors=True)
        wall, rss, code, out = timed([sys.executable, "-m", "edgeseg", "export", str(run), "--target",
                                      "tflite,coreml:fp16", "--precision", "fp32,fp16,int8", *extra, "-q"])
        if code != 0:
            raise SystemExit(f"edgeseg export failed:\n{out}")
        row[f"{key}_s"], row[f"{key}_rss_gb"] = round(wall, 1), round(rss, 2)
    wall, rss, code, out = timed([sys.executable, "-c", FLOOR, str(run), str(work / f"floor{size}.onnx")])
    if code != 0:
        raise SystemExit(f"floor failed:\n{out}")
    row["floor_s"], row["floor_rss_gb"] = round(wall, 1), round(rss, 2)
    # the same model as ONNX, for onnxruntime (not timed)
    subprocess.run([sys.executable, "-m", "edgeseg", "export", str(run), "--target", "onnx", "-q"], check=True)
    onnx_file = run / "export" / "onnx-fp32" / "model.onnx"
    row["onnx2tf_v1"] = onnx2tf_v1(onnx_file, work / f"onnx2tf{size}")
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    tfl = measure_latency(TFLiteRunner(run / "export" / "tflite-fp32" / "model.tflite", threads=2), x, runs, 5)
    ort = measure_latency(OnnxRunner(onnx_file, threads=2), x, runs, 5)
    try:
        direct = litert_direct(ck, x, runs)
    except Exception as e:  # noqa: BLE001 - report the route's failure as a figure, not a crash
        direct = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    row.update({"edgeseg_files": ["tflite fp32", "tflite fp16", "tflite int8", "coreml fp16"],
                "vs_floor": round(row["edgeseg_direct_s"] / row["floor_s"], 2),
                "tflite_fp32_ms": round(tfl["median_ms"], 2), "onnxruntime_ms": round(ort["median_ms"], 2),
                "latency_ratio": round(tfl["median_ms"] / ort["median_ms"], 2), "litert_direct": direct})
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--runs", type=int, default=30, help="timed runs per latency figure")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from edgeseg.core.versions import hardware

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeseg-export-speed-") as d:
        for size in a.sizes:
            print(f"{size} px ...", file=sys.stderr)
            rows.append(one_size(size, a.runs, Path(d)))
    hw = hardware()
    if a.json:
        print(json.dumps({"hardware": hw, "rows": rows}, indent=2))
        return 0
    print(f"LR-ASPP MobileNetV3-L, {hw['cpu']} ({hw['cores']} cores)")
    print("| px | edgeseg 3 TFLite + Core ML fp16, one call: default (int8 ladder) / --int8-route direct | floor "
          "(torch + ONNX export) | direct / floor | peak RSS default / direct / floor | onnx2tf 1.x -oiqt "
          "| TFLite fp32 / onnxruntime ms | litert-torch direct fp32 |")
    print("|---:|---:|---:|---:|---:|---|---:|---|")
    for r in rows:
        dct, v1 = r["litert_direct"], r["onnx2tf_v1"]
        direct = dct.get("error") or (f"{dct['seconds']} s, {dct['agreement_pct']} % agreement, "
                                      f"max |Δ| {dct['max_abs_diff']:.2g}, {dct['latency_ms']} ms")
        old = v1.get("error") or f"{v1['seconds']} s, {v1['rss_gb']} GB ({len(v1['files'])} files, exit {v1['exit']})"
        print(f"| {r['size']} | {r['edgeseg_s']} s / {r['edgeseg_direct_s']} s | {r['floor_s']} s | "
              f"{r['vs_floor']}x | {r['edgeseg_rss_gb']} / {r['edgeseg_direct_rss_gb']} / {r['floor_rss_gb']} GB | "
              f"{old} | {r['tflite_fp32_ms']} / {r['onnxruntime_ms']} ({r['latency_ratio']}x) | {direct} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
