"""``edgeseg check``: parity of existing exports against the reference (any task); exit 1 when one fails."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgeseg.cli.common import EPILOG, common, exit_code, log_of

def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("check", help="mask parity of an export vs PyTorch", epilog=EPILOG, formatter_class=fmt,
                       description="Run the exported model and the PyTorch reference on the test split and "
                       "compare their masks. Default thresholds: fp32 >= 99.9 % agreement; fp16 >= 99.5 %; "
                       "int8, palettized and w8a8 >= 98 % and mask mIoU >= 0.95; every precision: the dataset "
                       "mIoU (vs the labels) drops by at most 0.01 (one point) from PyTorch to the export, and no class's "
                       "IoU by more than 0.02 (two points).")
    common(p)
    p.add_argument("run", type=Path)
    p.add_argument("--target", required=True, help="as for export: one, several comma-separated, or all (the "
                   "test images and the reference are read once for every export)")
    p.add_argument("--precision", help="as for export: one, several comma-separated, or all")
    p.add_argument("--min-agreement", type=float, help="minimum pixel agreement in %%")
    p.add_argument("--min-mask-miou", type=float, help="minimum mIoU of exported vs reference masks")
    p.add_argument("--max-miou-drop", type=float, help="largest allowed drop of the dataset mIoU from PyTorch to "
                   "the export, absolute (default 0.01 = one point)")
    p.add_argument("--max-class-drop", type=float, help="largest allowed drop of any one class's IoU (vs the labels) "
                   "from PyTorch to the export, absolute (default 0.02 = two points)")
    p.add_argument("--limit", type=int, help="use only the first N test images")
    p.add_argument("--data", metavar="SPEC",
                   help="check on this dataset's test split instead of the run's (same classes), e.g. "
                   "folder:/data/field-photos?split=0,0,1; images are streamed, a broken one stops the check "
                   "(exit 1) with the figures of every image before it")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default="logits", choices=("logits", "argmax"), help="which export to check")
    p.add_argument("--input", dest="input_kind", default="image", choices=("image", "multiarray", "pixels"),
                   help="which export to check (coreml: multiarray; tflite: pixels)")
    p.add_argument("--compute-units", metavar="UNITS",
                   help="coreml on macOS: Core ML runtime compute units to check, comma-separated from CPU_ONLY, "
                   "CPU_AND_GPU, CPU_AND_NE, ALL (default CPU_ONLY,ALL; the check passes only if every one does). "
                   "Elsewhere Core ML is checked by reference execution of the saved program; asking for "
                   "compute units there is NOT VERIFIED (exit 3)")
    p.add_argument("--score-threshold", type=float, default=0.3,
                   help="Mask R-CNN runs: detections scoring below it are not compared (default %(default)s)")
    p.add_argument("--device", default="host", choices=("host", "arm64"),
                   help="tflite: where the file runs. arm64: LiteRT's aarch64 build under qemu user-mode emulation "
                   "(ARM NEON/dot-product kernels) on each --arm-cpu profile, beside this host's XNNPACK; 8 test "
                   "images unless --limit says otherwise. Provision it once with: edgeseg device setup arm64")
    p.add_argument("--arm-cpu", dest="arm_cpus", metavar="CPUS",
                   help="--device arm64: emulated CPU profiles, comma-separated (default cortex-a76,cortex-a53: with "
                   "and without dot-product/fp16 arithmetic)")
    p.add_argument("--kernels", metavar="PATHS",
                   help="tflite: LiteRT kernel paths to run, comma-separated from xnnpack (the default delegate), "
                   "builtin (XNNPACK off) and reference (default: xnnpack; with --device arm64 all three)")
    p.add_argument("--gate-kernels", metavar="PATHS",
                   help="tflite: the kernel paths whose parity decides pass/fail (default xnnpack: what the "
                   "bundle's LiteRT and MediaPipe code runs; add builtin if your app turns XNNPACK off). Every "
                   "path's figures and its bit-exactness against this host's XNNPACK are recorded either way")
    p.add_argument("--json", action="store_true", help="print parity.json to stdout (a list for several exports)")


def run(a: argparse.Namespace) -> int:
    from edgeseg.steps.export import check

    log = log_of(a)
    out = check(a.run, a.target, a.precision, log=log, min_agreement=a.min_agreement,
                min_mask_miou=a.min_mask_miou, max_miou_drop=a.max_miou_drop,
                max_class_drop=a.max_class_drop, limit=a.limit, threads=a.threads,
                compute_units=a.compute_units, output=a.output, input_kind=a.input_kind, data=a.data,
                score_threshold=a.score_threshold, device=a.device, arm_cpus=a.arm_cpus, kernels=a.kernels,
                gate_kernels=a.gate_kernels)
    if a.json:
        js = [out.task.to_json(r) for r in out.results]
        print(json.dumps(js[0] if len(js) == 1 else js, indent=2, default=str))
    else:
        for r in out.results:
            print(out.task.describe(r))
    return exit_code([out.task.status(r) for r in out.results])
