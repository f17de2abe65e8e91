"""Datasets behind one spec string: ``synthetic`` (embedded default) or ``folder:PATH?opt=v&...``.

``open_split(spec, split)`` returns a :class:`~edgeseg.data.base.SegDataset`.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import parse_qsl

from edgeseg.data.base import IGNORE_INDEX, ClassInfo, SegDataset
from edgeseg.errors import UsageError
from edgeseg.registry import Registry, suggest

DATASETS: Registry[Callable[..., SegDataset]] = Registry("dataset format")

__all__ = ["DATASETS", "IGNORE_INDEX", "ClassInfo", "SegDataset", "open_split", "parse_spec"]


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``"folder:/data/x?values=0,255"`` into ``("folder", "/data/x", {"values": "0,255"})``."""
    kind, _, rest = spec.partition(":")
    path, _, query = rest.partition("?")
    if "?" in kind:
        kind, _, query = kind.partition("?")
    try:
        opts = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise UsageError(f"--data '{spec}': options after '?' must look like key=value&key=value") from None
    return kind, path, opts


def _ints(spec: str, key: str, value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v != ""]
    except ValueError:
        raise UsageError(f"--data '{spec}': {key}= takes comma-separated integers, got '{value}'") from None


def _take(spec: str, opts: dict[str, str], allowed: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    out = {}
    for k, v in opts.items():
        if k not in allowed:
            raise UsageError(
                f"--data '{spec}': unknown option '{k}'{suggest(k, list(allowed))}; "
                f"options are: {', '.join(allowed)}"
            )
        out[k] = allowed[k](v)
    return out


@DATASETS.register("synthetic")
def _synthetic(spec: str, path: str, opts: dict[str, str], split: str, image_size: int) -> SegDataset:
    from edgeseg.data.synthetic import DEFAULT_SIZES, SyntheticShapes

    o = _take(spec, opts, {"seed": int, "train": int, "val": int, "test": int})
    length = o.get(split, DEFAULT_SIZES[split])
    return SyntheticShapes(split, size=image_size, length=length, seed=o.get("seed", 0))


@DATASETS.register("folder")
def _folder(spec: str, path: str, opts: dict[str, str], split: str, image_size: int) -> SegDataset:
    from edgeseg.data.folder import FolderDataset

    if not path:
        raise UsageError(f"--data '{spec}': give the folder, e.g. folder:/data/mine")

    def floats(v: str) -> list[float]:
        try:
            return [float(x) for x in v.split(",")]
        except ValueError:
            raise UsageError(f"--data '{spec}': split= takes three fractions, got '{v}'") from None

    o = _take(spec, opts, {
        "images": str, "masks": str,
        "values": lambda v: _ints(spec, "values", v),
        "classes": lambda v: [c.strip() for c in v.split(",") if c.strip()],
        "ignore": lambda v: _ints(spec, "ignore", v)[0],
        "split": floats,
    })
    if "split" in o:
        o["split_fractions"] = o.pop("split")
    return FolderDataset(path, split=split, **o)


def open_split(spec: str, split: str, image_size: int = 128) -> SegDataset:
    """Open one split (train/val/test) of the dataset named by ``spec``."""
    kind, path, opts = parse_spec(spec)
    return DATASETS.get(kind)(spec, path, opts, split, image_size)
