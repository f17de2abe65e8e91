"""Write files and folders to a temporary sibling, then rename: no half-written artifact survives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeseg.core.errors import UsageError
from exporters.atomic import atomic_path

__all__ = ["atomic_path", "ensure_dir", "write_json", "write_text"]


def ensure_dir(path: Path, what: str = "output directory") -> Path:
    """Create ``path`` as a directory; a clear UsageError when it exists as a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} '{path}' is a file, not a directory; pass another path with -o")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    """Atomically write a text file."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)
    return Path(path)
