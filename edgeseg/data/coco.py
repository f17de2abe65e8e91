"""COCO instances, read as ``annotations_trainval2017.zip`` and the image zips unpack.

Layout::

    annotations/instances_{train,val}2017.json
    {train,val}2017/000000000139.jpg

The annotation file is parsed once per split into pycocotools' index (``COCO``); each sample decodes
its polygons, RLE and crowd RLE with pycocotools. Options:

* ``categories``: ``all`` (the 80 thing categories, default), ``voc`` (the 20 Pascal VOC categories,
  as torchvision's COCO-VOC subset), or comma-separated COCO category names.
* Semantic masks follow torchvision's segmentation reference: each instance (crowd included) paints its
  class, pixels covered by two or more instances are ignored (255), and background is class 0.
* ``empty``: ``drop`` removes images without an instance of the chosen categories covering more
  than ``min_area`` pixels (default 1000; torchvision's rule), ``keep`` keeps them; default ``drop`` for
  ``train`` and ``keep`` for ``val``/``test``.
* ``year`` (default 2017). COCO's test annotations are not public, so ``test`` reads ``val``.

``instances(i)`` gives Mask R-CNN targets: boxes (x1, y1, x2, y2), labels, masks, without crowd regions.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeseg.data.base import IGNORE_INDEX, ClassInfo, default_colors
from edgeseg.data.folder import read_image
from edgeseg.data.layout import raise_problems
from edgeseg.data.voc import VOC_CLASSES
from edgeseg.errors import DataError, UsageError
from edgeseg.registry import suggest

# COCO category ids of the 20 VOC classes, in VOC's order (torchvision references/segmentation/coco_utils.py)
VOC_CATEGORY_IDS = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)


def _load_index(path: Path):
    try:
        from pycocotools.coco import COCO
    except ImportError:  # pragma: no cover - pinned in pyproject
        raise DataError("reading COCO needs pycocotools: pip install pycocotools") from None
    if not path.is_file():
        raise DataError(f"annotation file '{path}' does not exist")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timings
            coco = COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"annotation file '{path}' is not valid JSON ({e})") from None
    except (KeyError, TypeError, ValueError, AssertionError) as e:
        raise DataError(f"annotation file '{path}' is not a COCO instances file (missing or bad {e})") from None
    for key in ("images", "annotations", "categories"):
        if key not in coco.dataset:
            raise DataError(f"annotation file '{path}' has no '{key}' list; it is not a COCO instances file")
    return coco


class CocoDataset:
    """One split of COCO as semantic masks (``__getitem__``) and instance targets (``instances``)."""

    def __init__(self, root: Path | str, split: str, categories: str = "all", empty: str | None = None,
                 min_area: float = 1000.0, year: int = 2017, strict: bool = True) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"COCO root '{root}' does not exist or is not a directory")
        if not (root / "annotations").is_dir():
            hits = sorted(root.glob("*/annotations"))
            hint = f" — did you mean '{hits[0].parent}'?" if hits else \
                "; a COCO root holds annotations/instances_*.json and the image folders"
            raise DataError(f"no annotations/ under '{root}'{hint}")
        name = "val" if split == "test" else split
        self.root, self.split = root, split
        self.image_dir = root / f"{name}{year}"
        if not self.image_dir.is_dir():
            raise DataError(f"no {name}{year}/ image folder under '{root}'")
        self.annotation_file = root / "annotations" / f"instances_{name}{year}.json"
        self.coco = _load_index(self.annotation_file)
        self.category_ids, self.classes = self._categories(categories)
        self._class_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        empty = empty or ("drop" if split == "train" else "keep")
        if empty not in ("drop", "keep"):
            raise UsageError(f"--data coco: empty must be 'drop' or 'keep', got '{empty}'")
        ids = sorted(self.coco.imgs)
        if empty == "drop":
            ids = [i for i in ids if self._has_annotations(i, min_area)]
        self.ids = ids
        self.problems: list[str] = []
        for i in ids:
            info = self.coco.imgs[i]
            if "file_name" not in info or "height" not in info or "width" not in info:
                self.problems.append(f"{self.annotation_file}: image id {i} lacks file_name/height/width")
        if strict:
            raise_problems(self.problems, f"COCO '{root}' split '{split}'")
            if not ids:
                raise DataError(f"COCO '{root}' split '{split}' has no images with the chosen categories")

    def _categories(self, spec: str) -> tuple[list[int], list[ClassInfo]]:
        cats = self.coco.cats
        if spec == "all":
            ids = sorted(cats)
            names = [cats[c]["name"] for c in ids]
            colors = default_colors(len(ids) + 1)
            return ids, [ClassInfo("background", (0, 0, 0))] + [ClassInfo(n, colors[k + 1]) for k, n in enumerate(names)]
        if spec == "voc":
            missing = [c for c in VOC_CATEGORY_IDS if c not in cats]
            if missing:
                raise DataError(f"categories=voc: '{self.annotation_file}' lacks COCO category ids {missing}")
            return list(VOC_CATEGORY_IDS), list(VOC_CLASSES)
        by_name = {v["name"]: k for k, v in cats.items()}
        ids = []
        for n in (x.strip() for x in spec.split(",") if x.strip()):
            if n not in by_name:
                raise UsageError(f"--categories: COCO has no category '{n}'{suggest(n, list(by_name))}")
            ids.append(by_name[n])
        if not ids:
            raise UsageError("--categories is empty; use all, voc or category names")
        colors = default_colors(len(ids) + 1)
        return ids, [ClassInfo("background", (0, 0, 0))] + [ClassInfo(cats[c]["name"], colors[k + 1])
                                                           for k, c in enumerate(ids)]

    def _anns(self, image_id: int) -> list[dict]:
        return [a for a in self.coco.imgToAnns.get(image_id, []) if a.get("category_id") in self._class_of]

    def _has_annotations(self, image_id: int, min_area: float) -> bool:
        anns = self._anns(image_id)
        return bool(anns) and sum(a.get("area", 0) for a in anns) > min_area

    def __len__(self) -> int:
        return len(self.ids)

    def name(self, i: int) -> str:
        return str(self.image_dir / self.coco.imgs[self.ids[i]].get("file_name", f"id {self.ids[i]}"))

    def _masks(self, image_id: int, anns: Sequence[dict], h: int, w: int) -> np.ndarray:
        out = np.zeros((len(anns), h, w), np.uint8)
        for k, a in enumerate(anns):
            try:
                m = self.coco.annToMask(a)
            except Exception as e:  # pycocotools raises bare exceptions for malformed segmentations
                raise DataError(f"{self.annotation_file}: annotation id {a.get('id')} of image id {image_id} has a "
                                f"segmentation pycocotools cannot decode ({type(e).__name__}: {e})") from None
            if m.shape != (h, w):
                raise DataError(f"{self.annotation_file}: annotation id {a.get('id')} decodes to "
                                f"{m.shape[1]}x{m.shape[0]} but image id {image_id} is {w}x{h}")
            out[k] = m
        return out

    def _image(self, i: int) -> tuple[np.ndarray, dict]:
        info = self.coco.imgs[self.ids[i]]
        path = self.image_dir / info["file_name"]
        img = read_image(path)
        if img.shape[:2] != (info["height"], info["width"]):
            raise DataError(f"image '{path}' is {img.shape[1]}x{img.shape[0]} but '{self.annotation_file}' says "
                            f"{info['width']}x{info['height']}")
        return img, info

    def label(self, i: int) -> np.ndarray:
        info = self.coco.imgs[self.ids[i]]
        return self._semantic(self.ids[i], info["height"], info["width"])

    def _semantic(self, image_id: int, h: int, w: int) -> np.ndarray:
        anns = self._anns(image_id)
        if not anns:
            return np.zeros((h, w), np.int64)
        masks = self._masks(image_id, anns, h, w)
        cats = np.array([self._class_of[a["category_id"]] for a in anns], np.int64)
        target = (masks.astype(np.int64) * cats[:, None, None]).max(0)
        target[masks.sum(0) > 1] = IGNORE_INDEX
        return target

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img, info = self._image(i)
        return img, self._semantic(self.ids[i], info["height"], info["width"])

    def instances(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Image and Mask R-CNN targets: ``boxes`` [K, 4] float32 x1y1x2y2, ``labels`` [K] (1-based class
        indices), ``masks`` [K, H, W] uint8; crowd regions and degenerate boxes are left out."""
        img, info = self._image(i)
        h, w = info["height"], info["width"]
        anns = [a for a in self._anns(self.ids[i]) if not a.get("iscrowd", 0)]
        boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        anns = [a for a, k in zip(anns, keep) if k]
        masks = self._masks(self.ids[i], anns, h, w)
        labels = np.array([self._class_of[a["category_id"]] for a in anns], np.int64)
        return img, {"boxes": boxes[keep], "labels": labels, "masks": masks}
