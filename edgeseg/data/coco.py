"""COCO instances: the official release, and any instances JSON an annotation tool writes.

Layouts (see :class:`CocoDataset`): ``coco:ROOT`` for the official release as
``annotations_trainval2017.zip`` and the image zips unpack::

    annotations/instances_{train,val}2017.json
    {train,val}2017/000000000139.jpg

or a Roboflow export (``train/ valid/ test/`` with ``_annotations.coco.json``), or a CVAT COCO 1.0
export (``annotations/instances_<subset>.json`` + ``images/``); ``coco:path/to/annotations.json[?images=DIR]``
for any single instances file (labelme's ``annotations.json``), split by a hash of the file names.

The annotation file is parsed once per split into pycocotools' index (``COCO``); each sample decodes
its polygons, RLE and crowd RLE with pycocotools. Options:

* ``categories``: ``all`` (the 80 thing categories, default), ``voc`` (the 20 Pascal VOC categories,
  as torchvision's COCO-VOC subset), or comma-separated COCO category names.
* Semantic masks follow torchvision's segmentation reference: each instance (crowd included) paints its
  class, pixels covered by two or more instances are ignored (255), and background is class 0.
* ``empty``: ``drop`` removes images without an instance of the chosen categories covering more
  than ``min_area`` pixels (default 1000; torchvision's rule), ``keep`` keeps them; default ``drop`` for
  the official ``train`` and ``keep`` otherwise (an exported image was labelled on purpose).
* ``year`` (default 2017). COCO's test annotations are not public, so the official ``test`` reads ``val``.
* ``images``: the folder ``file_name`` is relative to; ``split``: train/val/test fractions of a single JSON.

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
from edgeseg.data.io import split_of, read_image
from edgeseg.data.layout import raise_problems
from edgeseg.data.voc import VOC_CLASSES
from edgeseg.core.errors import DataError, MissingSplit, UsageError
from edgeseg.core.registry import suggest

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


BACKGROUND_NAMES = ("_background_", "background", "__background__", "bg")
ROBOFLOW_SPLITS = {"train": ("train",), "val": ("valid", "val"), "test": ("test",)}


def _split_by_hash(coco, split: str, fractions: Sequence[float]) -> list[int]:
    return [i for i, info in coco.imgs.items()
            if split_of(Path(str(info.get("file_name", i))).stem, fractions) == split]


def _find_images(coco, json_path: Path, extra: Sequence[Path], option: str | None) -> Path:
    """The folder that ``file_name`` is relative to: ``?images=DIR`` (absolute or relative to the JSON's
    folder), else the first of the JSON's folder, its parent, their ``images/`` and ``extra`` that holds
    most of the first images."""
    if option is not None:
        d = Path(option).expanduser()
        d = d if d.is_absolute() else json_path.parent / d
        if not d.is_dir():
            raise DataError(f"images={option}: '{d}' is not a directory")
        return d
    names = [str(info["file_name"]) for info in list(coco.imgs.values())[:8] if "file_name" in info]
    cands = [json_path.parent, json_path.parent.parent, json_path.parent / "images",
             json_path.parent.parent / "images", *extra]
    best = max(cands, key=lambda d: sum((d / n).is_file() for n in names))
    if names and not any((best / n).is_file() for n in names):
        raise DataError(f"cannot find the images of '{json_path}' (e.g. '{names[0]}'): looked in "
                        f"{', '.join(str(c) for c in dict.fromkeys(cands))}; give the folder with ?images=DIR")
    return best


class CocoDataset:
    """One split of a COCO instances file as semantic masks (``__getitem__``) and instance targets
    (``instances``).

    ``root`` is one of (the first that fits):

    * an instances JSON file (labelme's ``annotations.json``, CVAT COCO 1.0's
      ``annotations/instances_default.json``, one Roboflow split file): its images are split by a hash of
      the file name (``split=0.7,0.15,0.15``);
    * the official root (``annotations/instances_{train,val}2017.json`` + ``{train,val}2017/``);
    * a Roboflow COCO export (``train/ valid/ test/`` each with ``_annotations.coco.json``);
    * a folder with ``annotations/instances_<split>.json`` (CVAT subsets) or one JSON (split by hash).

    ``file_name`` is resolved against ``images=DIR`` or found beside the JSON (its folder, its parent,
    their ``images/``). Categories are remapped to contiguous class ids 1..N in id order, names kept; a
    background category (``_background_``, ``background``) is class 0, and a category used by no
    annotation that is the ``supercategory`` of the others (Roboflow's project category, id 0) is dropped.
    """

    def __init__(self, root: Path | str, split: str, categories: str = "all", empty: str | None = None,
                 min_area: float = 1000.0, year: int = 2017, images: str | None = None,
                 split_fractions: Sequence[float] = (0.7, 0.15, 0.15), strict: bool = True) -> None:
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(f"COCO root '{root}' does not exist")
        self.root, self.split = root, split
        name = "val" if split == "test" else split
        by_hash, extra = False, []
        if root.is_file():
            self.annotation_file, by_hash, how = root, True, f"COCO JSON '{root.name}', split by file-name hash"
        elif (root / "annotations" / f"instances_{name}{year}.json").is_file():
            self.annotation_file = root / "annotations" / f"instances_{name}{year}.json"
            extra = [root / f"{name}{year}"]
            how = f"official COCO ({self.annotation_file.name}, {name}{year}/)"
        elif any((root / d / "_annotations.coco.json").is_file() for ds in ROBOFLOW_SPLITS.values() for d in ds):
            found = [root / d for d in ROBOFLOW_SPLITS[split] if (root / d / "_annotations.coco.json").is_file()]
            if not found:
                have = sorted(d.name for d in root.iterdir() if (d / "_annotations.coco.json").is_file())
                raise MissingSplit(f"Roboflow COCO export '{root}' has no {split} split "
                                   f"(no {'/ or '.join(ROBOFLOW_SPLITS[split])}/_annotations.coco.json; it has "
                                   f"{', '.join(have)})")
            self.annotation_file = found[0] / "_annotations.coco.json"
            how = f"Roboflow COCO export ({found[0].name}/_annotations.coco.json)"
        else:
            jsons = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() \
                else sorted(root.glob("*.json"))
            mine = [j for j in jsons if j.stem in (f"instances_{split}", f"instances_{name}")]
            if mine:
                self.annotation_file, how = mine[0], f"COCO JSON per split ({mine[0].name})"
            elif len(jsons) == 1:
                self.annotation_file, by_hash = jsons[0], True
                how = f"COCO JSON '{jsons[0].name}', split by file-name hash"
            elif jsons:
                raise MissingSplit(f"COCO '{root}' has no {split} split: none of {', '.join(j.name for j in jsons)} "
                                   f"is instances_{split}.json; name one file with coco:PATH.json")
            else:
                hits = sorted(root.glob("*/annotations"))
                hint = f" — did you mean '{hits[0].parent}'?" if hits else \
                    "; give an instances JSON (coco:path/to/annotations.json) or a root with annotations/"
                raise DataError(f"no annotations/ and no COCO JSON under '{root}'{hint}")
        self.coco = _load_index(self.annotation_file)
        self._check_category_ids()
        self.image_dir = _find_images(self.coco, self.annotation_file, extra, images)
        self.category_ids, self.classes = self._categories(categories)
        self._class_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        official = how.startswith("official")
        empty = empty or ("drop" if split == "train" and official else "keep")
        if empty not in ("drop", "keep"):
            raise UsageError(f"--data coco: empty must be 'drop' or 'keep', got '{empty}'")
        ids = sorted(_split_by_hash(self.coco, split, split_fractions) if by_hash else self.coco.imgs)
        if empty == "drop":
            ids = [i for i in ids if self._has_annotations(i, min_area)]
        self.ids = ids
        self.layout = how + (f"; {self._dropped}" if self._dropped else "")
        self.problems: list[str] = []
        for i in ids:
            info = self.coco.imgs[i]
            if "file_name" not in info or "height" not in info or "width" not in info:
                self.problems.append(f"{self.annotation_file}: image id {i} lacks file_name/height/width")
        if strict:
            raise_problems(self.problems, f"COCO '{root}' split '{split}'")
            if not ids:
                raise DataError(f"COCO '{root}' split '{split}' has no images with the chosen categories")

    def _check_category_ids(self) -> None:
        used = {a.get("category_id") for a in self.coco.dataset["annotations"]}
        unknown = sorted(used - set(self.coco.cats), key=str)
        if unknown:
            raise DataError(f"annotation file '{self.annotation_file}': annotations use category ids {unknown[:8]} "
                            f"that 'categories' does not list; add them to 'categories' or drop those annotations")

    def _categories(self, spec: str) -> tuple[list[int], list[ClassInfo]]:
        cats = self.coco.cats
        used = {a.get("category_id") for a in self.coco.dataset["annotations"]}
        background = [c for c in sorted(cats) if str(cats[c]["name"]).lower() in BACKGROUND_NAMES]
        # Roboflow: category 0 is the project, the supercategory of every real one, and labels nothing
        parents = [c for c in sorted(cats) if c not in used and c not in background
                   and any(o.get("supercategory") == cats[c]["name"] for k, o in cats.items() if k != c)]
        self._dropped = "; ".join(
            [f"category '{cats[c]['name']}' (id {c}) is background, class 0" for c in background]
            + [f"category '{cats[c]['name']}' (id {c}) is the others' supercategory and labels nothing: dropped"
               for c in parents])
        bg_name = str(cats[background[0]]["name"]) if background else "background"
        if spec == "all":
            ids = [c for c in sorted(cats) if c not in background and c not in parents]
            names = [cats[c]["name"] for c in ids]
            colors = default_colors(len(ids) + 1)
            return ids, [ClassInfo(bg_name, (0, 0, 0))] + [ClassInfo(n, colors[k + 1]) for k, n in enumerate(names)]
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
        return ids, [ClassInfo(bg_name, (0, 0, 0))] + [ClassInfo(cats[c]["name"], colors[k + 1])
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
