"""One edgeseg process per run directory: an advisory lock (``flock``) on ``RUN/.edgeseg.lock``.

Two commands writing the same run (two trainings into one ``-o``, an export while a training replaces the
checkpoint) would interleave files; the second is refused with the first's pid and command. The operating system
drops the lock when the holder exits, even after ``kill -9``, so a lock never goes stale; the file itself stays
(it only names the last holder). Processes started by torchrun for a multi-process training run under their
launcher's lock. Platforms without ``fcntl`` (Windows) get no lock.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from edgeseg.core.errors import UsageError

LOCK_NAME = ".edgeseg.lock"


@contextlib.contextmanager
def run_lock(directory: Path, command: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"run directory '{directory}' is a file, not a directory; pass another path with -o")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UsageError(f"run directory '{directory}' is in use by {holder}; wait for it to finish or use another "
                         f"directory (the lock is released when that process exits)") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"edgeseg {command} (pid {os.getpid()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def run_dir_of(path: Path) -> Path:
    """The run directory a RUN argument names (a run directory or a checkpoint file in one)."""
    path = Path(path)
    return path.parent if path.suffix == ".pt" else path
