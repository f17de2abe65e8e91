"""Typed errors: every failure a user can cause names the file or argument and the fix.

Exit codes (documented in the README and ``edgeseg --help``):
    0  success (every check that ran passed)
    1  failure: bad data/checkpoint/model file, a conversion failed, or a parity check failed
    2  usage error: unknown name, bad argument value, output path that is a file
    3  a requested check could not run on this platform (e.g. Core ML runtime needs macOS);
       never reported as passed
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_VERIFIED = 3


class EdgesegError(Exception):
    """Base class of every error edgeseg raises on purpose; its message is shown without traceback."""

    exit_code = EXIT_FAILURE


class UsageError(EdgesegError):
    """A command-line argument or option value is wrong."""

    exit_code = EXIT_USAGE


class DataError(EdgesegError):
    """An image, mask or dataset folder cannot be used."""


class MissingSplit(DataError):
    """A dataset root has no files for the requested split (e.g. a Cityscapes download of ``val`` only).

    ``edgeseg data check`` reports it as a note on that split; a command that needs the split fails.
    """


class CheckpointError(EdgesegError):
    """A checkpoint is missing, unreadable, unsafe or does not fit the requested model."""


class ExportError(EdgesegError):
    """A conversion toolchain failed or is not installed."""


class CheckFailed(EdgesegError):
    """A parity check ran and one of its thresholds failed."""


def worst_status(statuses) -> str:
    """The status of several results: failed before not-verified before passed (what exit codes 1, 3, 0 say)."""
    statuses = list(statuses)
    for s in ("failed", "not-verified"):
        if s in statuses:
            return s
    return "passed"
