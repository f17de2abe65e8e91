"""What every command module shares: the epilog with the exit codes, the common flags, small argument parsers,
the progress log and the exit code of a set of results."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Iterable

from edgeseg.core.errors import EXIT_FAILURE, EXIT_NOT_VERIFIED, EXIT_OK, UsageError, worst_status

EPILOG = """exit codes:
  0  success (every check that ran passed)
  1  failure: bad data or checkpoint, failed conversion, failed parity threshold
  2  usage error (unknown name, bad value, output path is a file)
  3  a requested check could not run on this platform (Core ML compute units need macOS): not a pass
"""


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks and converter logs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or progress lines")


def fraction(name: str) -> Callable[[str], float]:
    """An argparse type: a number in [0, 1], refused naming ``name``."""
    def parse(v: str) -> float:
        try:
            f = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes a number between 0 and 1, not {v!r}") from None
        if not 0.0 <= f <= 1.0:
            raise argparse.ArgumentTypeError(f"{name} takes a number between 0 and 1, not {v}")
        return f

    return parse


def parse_opt(items: list[str], flag: str = "--model-opt") -> dict[str, Any]:
    """``KEY=VALUE`` items (values parsed as JSON when they can be)."""
    out: dict[str, Any] = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise UsageError(f"{flag} '{it}' must look like KEY=VALUE")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def log_of(a: argparse.Namespace, quiet_json: bool = True) -> Callable[[str], None]:
    """Progress lines on stderr; none with ``-q``, nor with ``--json`` when ``quiet_json``."""
    if a.quiet or (quiet_json and getattr(a, "json", False)):
        return lambda s: None
    return lambda s: print(s, file=sys.stderr)


def exit_code(statuses: Iterable[str]) -> int:
    """1 when a result failed, else 3 when one could not be verified here, else 0."""
    return {"failed": EXIT_FAILURE, "not-verified": EXIT_NOT_VERIFIED}.get(worst_status(statuses), EXIT_OK)
