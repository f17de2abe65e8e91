"""``edgeseg models``: every architecture with its parameters and multiply-adds."""

from __future__ import annotations

import argparse
import json

from edgeseg.cli.common import common
from edgeseg.core.errors import EXIT_OK

def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("models", help="list architectures with params and MACs", formatter_class=fmt,
                       description="List every registered architecture (default options) with its parameter "
                       "count and multiply-accumulates at --size.")
    common(p)
    p.add_argument("--size", default="128", help="input size for the MAC count: a side or HxW (e.g. 360x480)")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--json", action="store_true")


def run(a: argparse.Namespace) -> int:
    from edgeseg.core.image_size import parse_image_size
    from edgeseg.models.encoders import ENCODERS
    from edgeseg.steps.models import model_table

    h, w = parse_image_size(a.size, "--size")
    rows = model_table(h, w, a.classes)
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:14s} {r['params'] / 1e6:6.2f} M params  {r['macs'] / 1e9:7.3f} GMACs "
                  f"@{h}x{w}  {r['doc']}")
        print(f"\nencoders (encoder=...): {', '.join(ENCODERS)}; output_stride 8, 16 or 32 where the "
              f"architecture allows it.\nOptions: edgeseg train --model NAME --model-opt encoder=resnet18 "
              f"--model-opt output_stride=8")
    return EXIT_OK
