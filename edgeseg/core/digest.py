"""Content digests of run files: ``file_digest`` ties an export to the checkpoint it was made from (the first 16
hex digits of sha256, as export records store it); ``sha256`` is the full digest a bundle's manifest lists."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: Path) -> str:
    """The file's sha256 in hex, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """The short digest export records carry as ``checkpoint_digest``."""
    return sha256(path)[:16]
