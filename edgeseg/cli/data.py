"""``edgeseg data check|show``: read every file of a dataset and list every problem, or describe it."""

from __future__ import annotations

import argparse
import json

from edgeseg.cli.common import EPILOG, common
from edgeseg.core.errors import EXIT_FAILURE, EXIT_OK, UsageError

def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("data", help="inspect or check a dataset", formatter_class=fmt,
                       description="Inspect a dataset (show) or read every file of it and list every problem "
                       "(check).")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    q = dsub.add_parser("check", help="read every file; list every problem", epilog=EPILOG, formatter_class=fmt,
                        description="Read every sample of each split and report counts, the class pixel "
                        "histogram, image sizes and every broken file (unreadable or truncated image, label "
                        "size != image size, label values outside the class map, missing pair). Exit 1 if "
                        "anything is wrong.")
    common(q)
    q.add_argument("path", help="dataset root, or a full spec such as voc:PATH")
    q.add_argument("--format", help="voc, coco, cityscapes, camvid, folder (omit when PATH is a spec)")
    q.add_argument("--categories", help="COCO category subset: all, voc or names")
    q.add_argument("--split", action="append", choices=("train", "val", "test"),
                   help="check only this split (repeatable; default all)")
    q.add_argument("--limit", type=int, help="check only the first N samples of each split")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q = dsub.add_parser("show", help="classes, sizes and class pixel fractions", formatter_class=fmt)
    common(q)
    q.add_argument("spec", help="e.g. synthetic, folder:PATH?values=0,255, voc:PATH")
    q.add_argument("--image-size", default="128", help="size of generated (synthetic) images: a side or HxW")
    q.add_argument("--json", action="store_true")


def run(a: argparse.Namespace) -> int:
    from edgeseg.data.check import describe_dataset, format_description

    if a.data_command == "check":
        return run_check(a)
    if a.data_command != "show":
        raise UsageError("edgeseg data needs an action: check or show (see edgeseg data --help)")
    info = describe_dataset(a.spec, a.image_size)
    print(json.dumps(info, indent=2) if a.json else format_description(info))
    return EXIT_OK


def run_check(a: argparse.Namespace) -> int:
    from edgeseg.core.progress import progress_bar
    from edgeseg.data import dataset_spec
    from edgeseg.data.check import SPLITS, check_dataset, format_report

    spec = dataset_spec(a.path, a.format, a.categories)
    splits = tuple(a.split) if a.split else SPLITS

    def progress(split: str, i: int, n: int) -> None:
        if i == 0:
            bar.reset(n, f"check {split}")
        bar.advance()

    with progress_bar(None, "check", disable=a.quiet or a.json) as bar:
        report = check_dataset(spec, splits, a.limit, progress=progress)
    print(json.dumps(report, indent=2) if a.json else format_report(report))
    return EXIT_OK if report["ok"] else EXIT_FAILURE
