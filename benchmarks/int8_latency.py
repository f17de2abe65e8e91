"""Which op types make int8 TFLite slow: each op type kept in float in turn (ai-edge-quantizer, everything else
int8), LiteRT XNNPACK invoke latency at 1 and 2 threads, beside the fp32 file.

This is the measurement behind ``exporters.tflite_aeq.DEFAULT_FLOAT_TYPES`` (HARD_SWISH). Calibration is 8 random
images: ranges do not change which kernels run, only the masks (measured by ``edgeseg quantize --method aeq``).

    python benchmarks/int8_latency.py RUN   (RUN has export/tflite-fp32: edgeseg export RUN --target tflite)
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import numpy as np
from int8_speed import invoke_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    a = ap.parse_args()
    fp32 = a.run / "export" / "tflite-fp32" / "model.tflite"
    if not fp32.exists():
        raise SystemExit(f"{fp32} does not exist; first: edgeseg export {a.run} --target tflite")
    from exporters.tflite import load
    from exporters.tflite_aeq import Int8Quantizer

    _, c, h, w = load(fp32).input_shape_nchw
    calib = [np.random.default_rng(0).standard_normal((8, c, h, w)).astype(np.float32)]
    q = Int8Quantizer(fp32.read_bytes(), calib, float_types=())
    types = collections.Counter(o.type for o in q.ops)
    print(f"fp32: {invoke_ms(fp32, 1, 25):.1f} / {invoke_ms(fp32, 2, 25):.1f} ms at 1 / 2 threads")
    print("| kept in float | ops | 1 thread ms | 2 threads ms |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        for name in [None, *sorted(types)]:
            path.write_bytes(q.quantize([o.index for o in q.ops if o.type == name]))
            print(f"| {name or 'nothing (full int8)'} | {types.get(name, 0)} | {invoke_ms(path, 1, 25):.1f} | "
                  f"{invoke_ms(path, 2, 25):.1f} |", flush=True)


if __name__ == "__main__":
    main()
