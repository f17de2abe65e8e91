"""Core ML: conversion time, package size and mask parity of every compression mode.

Trains the default model (LR-ASPP MobileNetV3-Large, 128 px) briefly on the embedded data — or uses
``--run RUN`` — then exports every Core ML precision and checks it on the test split: by the Core ML
runtime on macOS (with predict latency per compute unit), elsewhere by reference execution of the saved
program (whose speed is not reported: it is not a device's).

    python benchmarks/coreml.py [--run RUN] [--epochs 4] [--limit 40]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeseg.train.config import TrainConfig
from edgeseg.tasks.semantic.run import check_run, export_run
from edgeseg.train.loop import train
from exporters.coreml import COMPUTE_UNITS, TARGET

MODES = [p for p in TARGET.precisions]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="an edgeseg run directory (default: train one)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--limit", type=int, default=40, help="test images for parity")
    a = ap.parse_args()
    tmp = None
    run = a.run
    if run is None:
        tmp = tempfile.TemporaryDirectory()
        run = Path(tmp.name) / "run"
        t0 = time.time()
        train(TrainConfig(epochs=a.epochs), run, quiet=True, log=lambda s: None)
        print(f"trained the default model ({a.epochs} epochs) in {time.time() - t0:.0f} s")
    mac = platform.system() == "Darwin"
    print(f"{'mode':20s} {'convert s':>9s} {'size MB':>8s} {'agree %':>8s} {'mask mIoU':>9s}  check")
    from edgeseg.core.errors import EdgesegError

    for mode in MODES:
        try:
            rec = export_run(run, "coreml", mode, log=lambda s: None)
        except EdgesegError as e:
            print(f"{mode:20s} export failed: {str(e).splitlines()[0][:150]}")
            continue
        res = check_run(run, "coreml", mode, limit=a.limit, log=lambda s: None)
        print(f"{mode:20s} {rec['seconds']:9.1f} {rec['size_bytes'] / 1e6:8.2f} {res.pixel_agreement:8.2f} "
              f"{res.mask_miou:9.4f}  {res.status} ({res.runtime.split(' (')[0]})")
        if mac:
            from edgeseg.core.latency import measure_latency
            from exporters.coreml import load

            x = np.zeros((1, 3, *rec["input_shape"][2:]), np.float32)
            for unit in COMPUTE_UNITS:
                lat = measure_latency(load(run / rec["path"], compute_units=unit), x, 20, 3)
                print(f"{'':20s} predict {unit:12s} median {lat['median_ms']:.2f} ms")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
