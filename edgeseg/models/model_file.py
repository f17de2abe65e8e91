"""The model files an imported run keeps beside its checkpoint (TorchScript, ONNX), read only while they are the
files that were imported."""

from __future__ import annotations

from pathlib import Path


def run_file_bytes(path: Path, sha256: str | None, kind: str) -> bytes:
    """The bytes of a model file an imported run keeps (TorchScript, ONNX), refused when missing or changed
    since the import (``sha256``; None for a file not yet imported)."""
    import hashlib

    from edgeseg.core.errors import CheckpointError

    if not path.is_file():
        raise CheckpointError(f"{kind} file '{path}' of this imported run is missing")
    data = path.read_bytes()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"{kind} file '{path}' changed since the import (sha256 differs); import again")
    return data
