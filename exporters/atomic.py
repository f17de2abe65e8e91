"""Write a file or folder to a temporary sibling, then rename it into place.

A crash or an exception inside the block leaves no half-written artifact at the final path, and a
previous good artifact stays until the new one is complete. The temporary sibling carries its writer's pid
(``.NAME.PID.XXXX.tmp``): a process killed with ``kill -9`` cannot clean up, so the next write of the same
artifact removes the temporaries of writers that no longer exist.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; move it onto ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
    tmp = tmp_dir / final.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        if final.is_dir() and not final.is_symlink():
            old = tmp_dir / (final.name + ".old")
            final.rename(old)
            tmp.rename(final)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(final: Path) -> list[Path]:
    """Remove the temporaries of ``final`` left by writers that died (their pid no longer exists)."""
    removed = []
    prefix = f".{Path(final).name}."
    for p in Path(final).parent.glob(f"{glob_escape(prefix)}*.tmp"):
        pid = p.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def glob_escape(s: str) -> str:
    import glob

    return glob.escape(s)
