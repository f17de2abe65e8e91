"""``edgeseg export``: a run's model to one or more targets and precisions (any task)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgeseg.cli.common import EPILOG, common, exit_code, log_of

def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("export", help="export a run's model to a target", epilog=EPILOG, formatter_class=fmt,
                       description="Export RUN's checkpoint to RUN/export/<target>-<precision>/.")
    common(p)
    p.add_argument("run", type=Path, help="run directory or checkpoint.pt")
    p.add_argument("--target", required=True, help="tflite, coreml, onnx, openvino or executorch; several comma-separated, "
                   "or all: one process exports them all (model, calibration images, ONNX/SavedModel and each "
                   "toolchain's import shared); TARGET:PRECISION names one pair whatever --precision says "
                   "(e.g. --target tflite,coreml:fp16 --precision all)")
    p.add_argument("--precision", help="tflite: fp32|fp16|int8; coreml: fp32|fp16|int8|palettize4|palettize6|"
                   "palettize8 (k-means; add -uniform for uniform palettes)|w8a8; onnx: fp32|int8 (QDQ, NNCF "
                   "PTQ); openvino: fp32|int8 (NNCF PTQ); executorch: fp32|int8 (XNNPACK delegate; int8: XNNPACK's PT2E "
                   "quantizer). Several comma-separated (each target takes those it "
                   "has), or all (every precision of each target); default: each target's first")
    p.add_argument("--output", default="logits", choices=("logits", "argmax"),
                   help="logits (default) or an in-graph argmax class map (tflite: uint8, coreml and executorch: int32)")
    p.add_argument("--input", dest="input_kind", default="image", choices=("image", "multiarray", "pixels"),
                   help="coreml: image (ImageType pixels, default) or multiarray (normalized floats); tflite: "
                   "image (normalized floats, default) or pixels (RGB 0-255, normalization in the graph; uint8 "
                   "for int8, float32 otherwise; what MediaPipe and Android camera code feed)")
    p.add_argument("--deployment-target", choices=("iOS16", "iOS17", "iOS18"),
                   help="coreml: minimum iOS (default iOS16; w8a8 needs iOS17)")
    p.add_argument("--calibration", type=int, default=100,
                   help="training images used to calibrate int8 (default %(default)s, or all if fewer)")
    p.add_argument("--int8-route", choices=("ladder", "direct"), default="ladder",
                   help="tflite int8 (logits output): ladder (default) makes full-int8 candidates (ai-edge-quantizer "
                   "with and without weight equalization, hard-swish float), checks each on the validation split "
                   "and keeps the fastest that passes the int8 gate, else searches mixed precision (docs/int8.md); "
                   "executorch int8: ladder checks the full int8 .pte with ExecuTorch's runtime on the validation "
                   "split, else searches which activations to keep float; direct writes the target's own full int8 "
                   "(not equalized) alone, unmeasured")
    p.add_argument("--max-float-macs", type=float, default=10.0,
                   help="ladder: the most multiply-adds (%%) its mixed-precision rung may keep in float "
                   "(default %(default)s)")
    p.add_argument("--weights", choices=("auto", "ema", "raw"), default="auto",
                   help="for runs trained with --ema: export the EMA or the raw weights (default: the run's "
                   "--export-weights)")
    p.add_argument("--score-threshold", type=float, default=0.3,
                   help="Mask R-CNN runs: detections scoring below it are not compared (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the export record as JSON (a list for several)")


def run(a: argparse.Namespace) -> int:
    from edgeseg.steps.export import export

    log = log_of(a, quiet_json=False)  # progress on stderr even with --json, as export always did
    t0 = time.time()
    out = export(a.run, a.target, a.precision, log=log, calibration=a.calibration, weights=a.weights,
                 output=a.output, input_kind=a.input_kind, deployment_target=a.deployment_target,
                 score_threshold=a.score_threshold, int8_route=a.int8_route, max_float_macs=a.max_float_macs)
    if len(out.results) > 1:
        log(f"{len(out.results)} exports in {time.time() - t0:.1f} s")
    if a.json:
        print(json.dumps(out.results[0] if len(out.results) == 1 else out.results, indent=2, default=str))
    if out.task.name == "semantic":  # an export is checked by edgeseg check
        return exit_code([])
    if not a.json:
        for rec in out.results:
            print(out.task.describe(rec, exported=True))
    return exit_code([out.task.status(r) for r in out.results])
