"""``edgeseg bundle --verify``: a bundle folder checked against its manifest (schema, every file's sha256, nothing
missing, extra, or outside the folder)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgeseg.core.digest import sha256
from edgeseg.core.errors import UsageError

SCHEMA = "edgeseg.bundle/1"


def validate(manifest: dict[str, Any]) -> list[str]:
    """Schema problems of a manifest (empty when it validates against ``schemas/bundle-1.schema.json``)."""
    from edgeseg.core.schemas import problems

    return problems(manifest, "bundle-1")


def _safe_member(root: Path, rel: str) -> str | None:
    """Why ``rel`` may not be read as a bundle file (None when it is a plain relative path inside ``root``)."""
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        return "is an absolute path"
    if ".." in p.parts:
        return "climbs out of the bundle ('..')"
    full = root / p
    for parent in [full, *full.parents]:
        if parent == root:
            break
        if parent.is_symlink():
            return "goes through a symbolic link"
    return None


def verify_bundle(root: Path) -> list[str]:
    """Everything wrong with a bundle folder: schema, missing/extra/unsafe files, sha256 mismatches."""
    root = Path(root)
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise UsageError(f"'{root}' is not an edgeseg bundle: no manifest.json")
    try:
        manifest = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        return [f"{mpath}: not valid JSON ({e})"]
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        return [f"{mpath}: schema is {found!r}, this edgeseg reads {SCHEMA!r}"]
    problems = [f"manifest.json {p}" for p in validate(manifest)]
    if problems:
        return problems
    listed = set()
    for entry in manifest["files"]:
        rel = entry["path"]
        why = _safe_member(root, rel)
        if why:
            problems.append(f"{rel}: {why}")
            continue
        listed.add(rel)
        f = root / rel
        if not f.is_file():
            problems.append(f"{rel}: listed in manifest.json but missing")
        elif sha256(f) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from manifest.json (file changed after bundling)")
    for plat in [*manifest["platforms"].values(), *([manifest["executorch"]] if "executorch" in manifest else [])]:
        if not any(p == plat["file"] or p.startswith(plat["file"] + "/") for p in listed):
            problems.append(f"{plat['file']}: the platform's model is not among the listed files")
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            problems.append(f"{rel}: symbolic link (bundles hold plain files)")
        elif p.is_file() and rel != "manifest.json" and rel not in listed:
            problems.append(f"{rel}: not listed in manifest.json")
    return problems
