"""The ``edgeseg`` command line: one module per command, each parsing its arguments and calling one library
function (:mod:`edgeseg.steps`, :mod:`edgeseg.quantize`, ...); this module dispatches, holds the run lock and
turns errors into one line and an exit code.

Exit codes: 0 success; 1 failure (bad file, failed conversion, failed parity check); 2 usage error;
3 a requested check could not run here (e.g. Core ML compute units need macOS) and is NOT reported as passed.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

from edgeseg import __version__
from edgeseg.cli import (bench, bundle, check, data, device, export, importer, maskrcnn, models, quantize, quickstart,
                         report, train)
from edgeseg.cli.common import EPILOG
from edgeseg.core.errors import EXIT_FAILURE, EXIT_USAGE, EdgesegError

# in the order `edgeseg --help` lists them
COMMANDS = {"train": train, "export": export, "check": check, "report": report, "bench": bench,
            "quantize": quantize, "bundle": bundle, "import": importer, "quickstart": quickstart,
            "maskrcnn": maskrcnn, "models": models, "data": data, "device": device}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgeseg", description="Train segmentation models, export them to "
                                 "TFLite and Core ML, and prove the exported masks match.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"edgeseg {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add(sub)
    return ap


# commands that write into a run directory, and the argument naming it
_WRITES_RUN = {"train": "output", "export": "run", "check": "run", "quantize": "run", "report": "run",
               "bundle": "run", "maskrcnn": "output"}


def _lock(a: argparse.Namespace):
    from contextlib import nullcontext

    from edgeseg.core.lock import run_dir_of, run_lock

    attr = _WRITES_RUN.get(a.command)
    target = getattr(a, attr, None) if attr else None
    if a.command == "maskrcnn" and target is None:  # maskrcnn export/check name the run positionally
        target = getattr(a, "run", None)
    if target is None or "RANK" in os.environ:  # torchrun's workers run under their launcher's lock
        return nullcontext()
    run = run_dir_of(target)
    creates = a.command == "train" or getattr(a, "maskrcnn_command", None) == "train"
    if not creates and not run.is_dir():
        return nullcontext()  # the command itself reports the missing run
    return run_lock(run, a.command)


def main(argv: Sequence[str] | None = None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    if not a.command:
        ap.print_help()
        return EXIT_USAGE
    if a.debug:
        os.environ["EDGESEG_DEBUG"] = "1"
    else:
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _lock(a):
            return COMMANDS[a.command].run(a)
    except EdgesegError as e:
        if a.debug:
            raise
        print(f"edgeseg {a.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgeseg: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        import errno

        if a.debug or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            if a.debug:
                raise
            print(f"edgeseg {a.command}: error: {e.strerror or e} ({e.filename or 'writing output'})",
                  file=sys.stderr)
            return EXIT_FAILURE
        where = e.filename or getattr(a, "output", None) or getattr(a, "run", None) or "the output"
        print(f"edgeseg {a.command}: error: out of disk space (or over the file size limit) while writing "
              f"'{where}': {e.strerror}. Earlier artifacts are intact (every file is written to a temporary "
              f"name first); free some space and run the command again", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as e:  # noqa: BLE001 - unexpected: one line, the traceback under --debug
        if a.debug:
            raise
        from exporters import ExporterError

        if isinstance(e, ExporterError):
            print(f"edgeseg {a.command}: error: {e}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"edgeseg {a.command}: internal error: {type(e).__name__}: {e} (run with --debug for the "
              f"traceback)", file=sys.stderr)
        return EXIT_FAILURE
