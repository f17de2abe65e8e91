"""fp32 vs int8 TFLite latency per architecture and size, for every int8 route that writes a different graph.

Latency does not depend on what the weights learned, so the models here are untrained (seeded) and calibrated on
random images; parity figures come from ``benchmarks/int8_real.py`` on trained models. Per architecture and size:

  fp32          — ``export --target tflite`` (onnx2tf 2.x),
  int8          — ``export --target tflite --precision int8``: ai-edge-quantizer on the fp32 file, HARD_SWISH kept
                  in float (the ladder's candidates and ``quantize --method aeq`` run these kernels),
  int8-hswish   — the same with every op int8, HARD_SWISH included (why it is kept float),
  pt2e        — PT2E + litert-torch (``quantize --method pt2e``; its graph equals QAT's, only weights differ).

LiteRT interpreter with XNNPACK, invoke only (no NCHW/NHWC transposes), median of ``--runs`` after 5 warm-ups, at
1 and ``--threads`` threads; the CPU is named in the output (VNNI or not: XNNPACK's int8 kernels use it).

    python benchmarks/int8_speed.py [--models lraspp,unet,deeplabv3plus] [--sizes 256,512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


ARCH = {"lraspp": ("lraspp", {}), "unet": ("unet", {"base": 16}),
        "deeplabv3plus": ("deeplabv3plus", {"encoder": "mobilenet_v2"})}


def invoke_ms(path: Path, threads: int, runs: int) -> float:
    from exporters.tflite import load

    r = load(path, threads=threads)
    i, d = r.interp, r.inp
    i.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(5):
        i.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        i.invoke()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in info if line.startswith("flags")))
        return name + (", AVX-512 VNNI" if "avx512_vnni" in flags else ", AVX-VNNI" if "avx_vnni" in flags
                       else ", no VNNI")
    except (OSError, StopIteration):
        import platform

        return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lraspp,unet,deeplabv3plus")
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--classes", type=int, default=11)
    a = ap.parse_args()
    import torch

    from exporters import ExportOptions, tflite_pt2e
    from exporters.tflite import export
    from exporters.tflite_aeq import Int8Quantizer

    from edgeseg.models import build_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            arch, kwargs = ARCH[name]
            for size in (int(s) for s in a.sizes.split(",")):
                torch.manual_seed(0)
                model = build_model(arch, a.classes, **kwargs).eval()
                rng = np.random.default_rng(0)
                calib = [rng.standard_normal((8, 3, size, size)).astype(np.float32)]
                example = calib[0][:1]
                work = Path(tmp) / f"{name}-{size}"
                work.mkdir()
                files, secs = {}, {}
                t0 = time.time()
                opts = ExportOptions(precision="fp32", calibration=calib, work_dir=work)
                files["fp32"] = export(model, example, opts, work / "fp32").path
                secs["fp32"] = time.time() - t0
                t0 = time.time()
                files["int8"] = export(model, example, opts.replace(precision="int8"), work / "int8").path
                secs["int8"] = time.time() - t0
                t0 = time.time()
                every = Int8Quantizer(files["fp32"].read_bytes(), calib, float_types=()).quantize()
                (work / "int8-hswish.tflite").write_bytes(every)
                files["int8-hswish"], secs["int8-hswish"] = work / "int8-hswish.tflite", time.time() - t0
                t0 = time.time()
                graph, q = tflite_pt2e.prepare(model, example, calib, qat=False)
                data, _ = tflite_pt2e.to_tflite(tflite_pt2e.convert(graph), example, q)
                (work / "pt2e.tflite").write_bytes(data)
                files["pt2e"], secs["pt2e"] = work / "pt2e.tflite", time.time() - t0
                fp32 = {t: invoke_ms(files["fp32"], t, a.runs) for t in (1, a.threads)}
                for route, path in files.items():
                    ms = fp32 if route == "fp32" else {t: invoke_ms(path, t, a.runs) for t in (1, a.threads)}
                    rows.append((name, size, route, path.stat().st_size / 1e6, ms[1], ms[a.threads],
                                 ms[a.threads] / fp32[a.threads], secs[route]))
                    print(rows[-1], flush=True)
    print(f"\nLiteRT XNNPACK invoke latency, untrained weights; {cpu_name()}")
    print(f"| model | px | route | MB | 1 thread ms | {a.threads} threads ms | vs fp32 ({a.threads} threads) | "
          f"build s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, size, route, mb, ms1, msn, ratio, s in rows:
        print(f"| {name} | {size} | {route} | {mb:.2f} | {ms1:.1f} | {msn:.1f} | {ratio:.2f}x | {s:.0f} |")


if __name__ == "__main__":
    main()
