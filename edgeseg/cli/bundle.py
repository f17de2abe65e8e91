"""``edgeseg bundle``: the folder Android and iOS builds consume (any task), or ``--verify`` of one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeseg.cli.common import EPILOG, common, log_of
from edgeseg.core.errors import EXIT_FAILURE, EXIT_OK, UsageError

def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("bundle", help="the folder Android and iOS builds consume", epilog=EPILOG, formatter_class=fmt,
                       description="Write RUN's checked exports as android/model.tflite (with TFLite metadata), "
                       "ios/<Name>.mlpackage, labels.txt, an app README with Kotlin and Swift code, and one "
                       "manifest.json (schema edgeseg.bundle/1) with sha256 of every file, parity and latency "
                       "evidence. Only exports whose parity check passed are taken. On a Mask R-CNN run: the "
                       "export graph's files, its output tensors and post-processing in the manifest, and "
                       "Kotlin/Swift that decode detections and paste masks as the check does. --verify DIR re-checks a "
                       "bundle against its manifest (exit 1 on any difference).")
    common(p)
    p.add_argument("run", type=Path, nargs="?", help="run directory or checkpoint.pt")
    p.add_argument("-o", "--output", type=Path, default=Path("dist"), help="bundle folder (default %(default)s)")
    p.add_argument("--tflite", default="auto", metavar="EXPORT",
                   help="which TFLite export, e.g. int8-pixels (a folder of RUN/export without 'tflite-'); auto "
                   "(default): the smallest passing one, pixel input first; none: leave Android out")
    p.add_argument("--coreml", default="auto", metavar="EXPORT",
                   help="which Core ML export, e.g. fp16; auto (default) or none, as --tflite")
    p.add_argument("--executorch", nargs="?", const="auto", default="none", metavar="EXPORT",
                   help="also bundle an ExecuTorch .pte (XNNPACK delegate; one file for Android and iOS) as "
                   "executorch/model.pte: --executorch alone takes the smallest passing one, --executorch int8 "
                   "names it; refused when none passed its check")
    p.add_argument("--name", help="model name in metadata and manifest (default: run folder + architecture); "
                   "the .mlpackage (and the Swift class Xcode generates) is named after it")
    p.add_argument("--version", default="1.0.0", help="model version (default %(default)s)")
    p.add_argument("--author", default="")
    p.add_argument("--license", default="")
    p.add_argument("--description", default="")
    p.add_argument("--allow-unchecked", action="store_true",
                   help="also take exports without a passing parity check (never failed ones)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty output folder")
    p.add_argument("--verify", type=Path, metavar="DIR",
                   help="verify an existing bundle (schema, sha256 of every file, no extra or unsafe paths)")
    p.add_argument("--json", action="store_true", help="print the manifest (or the verification) as JSON")


def run(a: argparse.Namespace) -> int:
    from edgeseg.steps.bundle.build import make_bundle
    from edgeseg.steps.bundle.verify import verify_bundle

    if a.verify is not None:
        if a.run is not None:
            raise UsageError("pass either RUN (to make a bundle) or --verify DIR, not both")
        problems = verify_bundle(a.verify)
        if a.json:
            print(json.dumps({"bundle": str(a.verify), "ok": not problems, "problems": problems}, indent=2))
        else:
            for p in problems:
                print(f"{a.verify}: {p}", file=sys.stderr)
            if not problems:
                print(f"{a.verify}: every file matches manifest.json")
        return EXIT_FAILURE if problems else EXIT_OK
    if a.run is None:
        raise UsageError("bundle needs RUN (a run directory) or --verify DIR")
    manifest = make_bundle(a.run, a.output, tflite=a.tflite, coreml=a.coreml, name=a.name, version=a.version,
                           author=a.author, license=a.license, description=a.description,
                           allow_unchecked=a.allow_unchecked, force=a.force,
                           log=log_of(a), executorch=a.executorch)
    if a.json:
        print(json.dumps(manifest, indent=2))
    else:
        for plat, d in manifest["platforms"].items():
            par = d["parity"]
            figures = (f"{par['pixel_agreement']:.3f} % agreement, mask mIoU {par['mask_miou']:.4f}"
                       if par.get("pixel_agreement") is not None else
                       f"{par['matched']}/{par['reference_detections']} detections matched, mask IoU "
                       f"{par['mask_iou_mean']:.4f}" if par.get("mask_iou_mean") is not None
                       else f"parity {par['status']}")
            print(f"{plat:8s} {d['file']}  {d['size_bytes'] / 1e6:.2f} MB  {d['precision']}  {figures}")
        if "executorch" in manifest:
            d = manifest["executorch"]
            par = d["parity"]
            print(f"executorch {d['file']}  {d['size_bytes'] / 1e6:.2f} MB  {d['precision']}  "
                  + (f"{par['pixel_agreement']:.3f} % agreement" if par.get("pixel_agreement") is not None
                     else f"parity {par['status']}")
                  + f"  {d['delegation']['fallback_ops']} ops outside XNNPACK")
        print(f"bundle: {a.output} ({len(manifest['files'])} files; edgeseg bundle --verify {a.output})")
    return EXIT_OK
