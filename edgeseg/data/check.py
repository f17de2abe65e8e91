"""``edgeseg data check``: every split of a dataset read once, every problem listed with its file.

The report names the layout that was recognised. A split the dataset does not have (a Cityscapes
download of ``val`` only) is a note, not a failure, as long as one split can be read. Per split: the
number of samples, the listing problems (an image without its label and the reverse, a
listed id whose files are missing), every file that cannot be used (unreadable or truncated image,
label size different from the image's, label values outside the class map, undecodable COCO
segmentation), the class pixel histogram (ignored pixels counted apart) and the image size distribution.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import numpy as np

from edgeseg.data import open_split
from edgeseg.data.base import IGNORE_INDEX
from edgeseg.core.errors import DataError, MissingSplit

SPLITS = ("train", "val", "test")


def check_dataset(spec: str, splits: tuple[str, ...] = SPLITS, limit: int | None = None,
                  progress: Callable[[str, int, int], Any] | None = None) -> dict[str, Any]:
    """Scan ``spec``'s splits; a dict ready for JSON (``ok`` is False when anything is wrong).

    ``progress(split, i, n)`` is called before sample ``i`` of ``n`` of each split.
    """
    report: dict[str, Any] = {"spec": spec, "splits": {}, "ok": True}
    seen: dict[tuple[tuple, tuple], str] = {}
    for split in splits:
        try:
            ds = open_split(spec, split, strict=False)
        except MissingSplit as e:
            report["splits"][split] = {"missing": str(e), "samples": 0}
            continue
        except DataError as e:
            report["splits"][split] = {"error": str(e), "samples": 0, "problems": [], "bad_files": []}
            report["ok"] = False
            continue
        files = (tuple(ds.name(i) for i in range(len(ds))), tuple(getattr(ds, "problems", ())))
        if any(files) and files in seen:  # e.g. VOC/COCO/Cityscapes read val for test
            report["splits"][split] = {"same_as": seen[files], "samples": len(ds)}
            continue
        seen[files] = split
        classes = list(ds.classes)
        report["classes"] = [c.name for c in classes]
        report.setdefault("layout", getattr(ds, "layout", type(ds).__name__))
        n = len(ds) if limit is None else min(len(ds), limit)
        hist = np.zeros(len(classes), np.int64)
        ignored = 0
        sizes: Counter[str] = Counter()
        bad: list[str] = []
        for i in range(n):
            if progress:
                progress(split, i, n)
            try:
                img, mask = ds[i]
            except DataError as e:
                bad.append(str(e))
                continue
            sizes[f"{img.shape[1]}x{img.shape[0]}"] += 1
            valid = mask != IGNORE_INDEX
            ignored += int((~valid).sum())
            hist += np.bincount(mask[valid].ravel(), minlength=len(classes))[: len(classes)]
        problems = list(getattr(ds, "problems", []))
        total = max(int(hist.sum()), 1)
        report["splits"][split] = {
            "samples": len(ds), "checked": n, "problems": problems, "bad_files": bad,
            "class_pixels": {c.name: int(v) for c, v in zip(classes, hist)},
            "class_fraction": {c.name: round(float(v) / total, 6) for c, v in zip(classes, hist)},
            "ignored_pixels": ignored,
            "image_sizes": dict(sizes.most_common()),
            "absent_classes": [c.name for c, v in zip(classes, hist) if v == 0],
        }
        if problems or bad:
            report["ok"] = False
    if not any("checked" in r for r in report["splits"].values()):
        report["ok"] = False  # not one split could be read
    return report


def format_report(report: dict[str, Any]) -> str:
    """The text report: one block per split, every problem on its own line."""
    lines = [f"{report['spec']}: {len(report.get('classes', []))} classes"
             + (f" ({', '.join(report['classes'])})" if report.get("classes") else "")]
    if report.get("layout"):
        lines.append(f"  layout: {report['layout']}")
    for split, r in report["splits"].items():
        if "error" in r:
            lines.append(f"  {split}: cannot open: {r['error']}")
            continue
        if "missing" in r:
            lines.append(f"  {split}: not in this dataset (a note, not a failure; commands that need it stop): "
                         f"{r['missing']}")
            continue
        if "same_as" in r:
            lines.append(f"  {split}: the same files as {r['same_as']} (this format has no labelled {split} split)")
            continue
        sizes = r["image_sizes"]
        size_text = ", ".join(f"{k} x{v}" for k, v in list(sizes.items())[:4]) + (" ..." if len(sizes) > 4 else "")
        lines.append(f"  {split}: {r['samples']} samples ({r['checked']} checked), image sizes: {size_text or '-'}")
        frac = r["class_fraction"]
        lines.append("    class pixels: " + ", ".join(f"{k} {v * 100:.2f}%" for k, v in frac.items())
                     + f"; ignored {r['ignored_pixels']} px")
        if r["absent_classes"]:
            lines.append(f"    classes with no pixel: {', '.join(r['absent_classes'])}")
        for p in r["problems"]:
            lines.append(f"    problem: {p}")
        for b in r["bad_files"]:
            lines.append(f"    bad file: {b}")
    n_bad = sum(len(r.get("problems", [])) + len(r.get("bad_files", [])) + ("error" in r)
                for r in report["splits"].values())
    lines.append("OK: no problems found" if report["ok"] else f"FAILED: {n_bad} problem(s)")
    return "\n".join(lines)


def describe_dataset(spec: str, image_size: str | int = 128) -> dict[str, Any]:
    """``edgeseg data show``: the classes, and per split the image count and each class's pixel fraction."""
    from edgeseg.data.transforms import class_frequencies

    info: dict[str, Any] = {"spec": spec, "splits": {}}
    for split in SPLITS:
        ds = open_split(spec, split, image_size)
        info["classes"] = [c.to_json() for c in ds.classes]
        freq = class_frequencies(ds, len(ds.classes))
        info["splits"][split] = {"images": len(ds),
                                 "pixel_fraction": [round(float(f), 5) for f in freq / max(freq.sum(), 1)]}
    return info


def format_description(info: dict[str, Any]) -> str:
    lines = [f"{info['spec']}: classes {', '.join(c['name'] for c in info['classes'])}"]
    for s, d in info["splits"].items():
        lines.append(f"  {s:5s} {d['images']:5d} images  pixel fraction per class {d['pixel_fraction']}")
    return "\n".join(lines)
