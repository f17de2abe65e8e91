"""``edgeseg device``: provision and show the emulated devices ``check --device`` runs exports on."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgeseg.cli.common import EPILOG, common, log_of
from edgeseg.core.errors import EXIT_FAILURE, EXIT_OK


def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("device", help="provision the emulated arm64 runtime for check --device arm64", epilog=EPILOG,
                       formatter_class=fmt,
                       description="setup: unpack qemu-user 10 (Debian trixie) and an arm64 Debian root with "
                       "Python 3.11 (mmdebstrap --variant=extract; mmdebstrap is installed with apt-get when "
                       "missing and running as root), and install the aarch64 wheels of this install's "
                       "ai-edge-litert and numpy from PyPI, into a cache (about 30 s and 230 MB once; idempotent: a "
                       "ready cache is kept). The cache is built in a temporary folder and renamed when complete. "
                       "status: what the cache holds (exit 1 when it is not ready).")
    common(p)
    p.add_argument("action", choices=("setup", "status"))
    p.add_argument("device", choices=("arm64",))
    p.add_argument("-o", "--output", type=Path, metavar="DIR",
                   help="the cache folder (default $EDGESEG_CACHE/arm64, else ~/.cache/edgeseg/arm64)")
    p.add_argument("--force", action="store_true", help="setup: provision again even when the cache is ready")
    p.add_argument("--json", action="store_true", help="print the cache's manifest as JSON")


def run(a: argparse.Namespace) -> int:
    from exporters.arm64 import Arm64Missing, cache_dir, require, setup

    cache = a.output or cache_dir()
    if a.action == "setup":
        found = setup(cache, force=a.force, log=log_of(a))
    else:
        try:
            found = require(cache)
        except Arm64Missing as e:
            print(f"edgeseg device status: {e}")
            return EXIT_FAILURE
    if a.json:
        print(json.dumps({"cache": str(cache), **found}, indent=2))
    else:
        print(f"arm64 runtime in '{cache}': qemu-aarch64 {found['qemu']} ({found['qemu_from']}), Python "
              f"{found.get('python', '?')}, " + ", ".join(f"{k} {v}" for k, v in found["wheels"].items()))
    return EXIT_OK
