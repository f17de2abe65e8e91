"""Pascal VOC 2012 segmentation, and the VOC-like folders that annotation tools write.

Recognised layouts (the root is the folder that holds ``JPEGImages/``):

* **VOC 2012** as ``VOCtrainval_11-May-2012.tar`` unpacks::

      VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg
      VOCdevkit/VOC2012/SegmentationClass/2007_000032.png        palette PNG: index = class, 255 = border
      VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

* **labelme** (``labelme2voc.py``): ``JPEGImages/``, ``SegmentationClass/`` palette PNGs (or ``.npy`` files
  with the PNGs in ``SegmentationClassPNG/``), ``class_names.txt`` (one name per line, ``_background_``
  first; 255 = ``__ignore__``), no ``ImageSets/``.
* **CVAT "Segmentation mask 1.1"**: ``labelmap.txt`` (``name:R,G,B:parts:actions``), ``SegmentationClass/``
  RGB PNGs in the labelmap's colours (1-channel PNGs are read as labelmap indices),
  ``ImageSets/Segmentation/default.txt`` (or ``train/val/test.txt`` when the task has subsets),
  ``JPEGImages/`` when exported with images.

Class names and colours come from ``labelmap.txt``, else ``class_names.txt`` (VOC colours), else the
official 21 classes. Splits come from ``ImageSets/Segmentation/<split>.txt``; ``test`` reads ``val`` when
there is no ``test.txt`` (VOC's test labels are not public). A root without ``train.txt`` and ``val.txt``
(labelme, CVAT's ``default.txt``) is split by a hash of each file name (``split=0.7,0.15,0.15``), like
the folder format; a root with some lists but not the requested one raises :class:`MissingSplit`.

With ``aug=true`` the SBD-augmented set (10,582 training images) is read from
``SegmentationClassAug/`` (grey PNGs of class indices, as distributed with DeepLab) listed by
``ImageSets/SegmentationAug/train_aug.txt`` (or, when that list is missing, every mask in the folder
that is not in ``val.txt``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from edgeseg.data.base import IGNORE_INDEX, ClassInfo
from edgeseg.data.io import IMAGE_SUFFIXES, split_of, read_mask
from edgeseg.data.layout import PairDataset, check_class_range, decode_colour, locate_root, pack_rgb
from edgeseg.core.errors import DataError, MissingSplit

VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
             "tvmonitor")
#: the colour of VOC's index 255 (object borders, "void"): ignored in RGB masks as it is in palette masks
VOID_COLOUR = (224, 224, 192)


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The official VOC colour map (bit-interleaved class index, from the devkit's ``VOClabelcolormap``)."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


VOC_CLASSES = tuple(ClassInfo(n, c) for n, c in zip(VOC_NAMES, voc_palette(21)))


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"split list '{path}' does not exist; VOC lists its segmentation splits in "
                        f"ImageSets/Segmentation/")
    return [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]


def read_labelmap(path: Path) -> list[ClassInfo]:
    """CVAT's ``labelmap.txt``: ``# comment`` lines, then ``name:R,G,B:parts:actions`` per class."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            rgb = tuple(int(v) for v in rest.split(":")[0].split(","))
            if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise ValueError
        except ValueError:
            raise DataError(f"{path}:{n}: expected 'name:R,G,B:parts:actions', got {line!r}") from None
        if not name.strip():
            raise DataError(f"{path}:{n}: a colour without a class name: {line!r}")
        out.append(ClassInfo(name.strip(), rgb))  # type: ignore[arg-type]
    if not out:
        raise DataError(f"labelmap '{path}' lists no classes")
    colours = [c.color for c in out]
    dup = next((c for c in colours if colours.count(c) > 1), None)
    if dup is not None:
        names = [c.name for c in out if c.color == dup]
        raise DataError(f"labelmap '{path}' gives {names} the same colour {dup}; masks could not tell them apart")
    return out


def read_class_names(path: Path) -> list[ClassInfo]:
    """labelme's ``class_names.txt``: one class name per line (``__ignore__`` is not a class)."""
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()
             if ln.strip() and ln.strip() != "__ignore__"]
    if not names:
        raise DataError(f"class list '{path}' names no classes")
    return [ClassInfo(n, c) for n, c in zip(names, voc_palette(len(names)))]


def decode_index(path: Path, num_classes: int = len(VOC_CLASSES)) -> np.ndarray:
    """Palette (or grey) PNG indices ``0..num_classes-1``, 255 = border -> class map with ignored borders."""
    raw = read_mask(path)
    mask = np.where(raw == 255, IGNORE_INDEX, raw)
    return check_class_range(mask, num_classes, path)


def decode_labelmap(path: Path, colours: dict[int, int], num_classes: int, table: str) -> np.ndarray:
    """A CVAT mask: RGB in the labelmap's colours, or a 1-channel PNG of labelmap indices."""
    try:
        with Image.open(path) as im:
            rgb = im.mode in ("RGB", "RGBA")
    except (OSError, ValueError, SyntaxError):
        rgb = False  # read_mask names the file and the problem
    return decode_colour(path, colours, table) if rgb else decode_index(path, num_classes)


def _label_dir(root: Path) -> Path:
    d = root / "SegmentationClass"
    if (root / "SegmentationClassPNG").is_dir() and not any(d.glob("*.png")):
        return root / "SegmentationClassPNG"  # labelme: .npy in SegmentationClass/, PNGs beside
    if not d.is_dir():
        raise DataError(f"no SegmentationClass/ under '{root}'; it holds the masks (palette or RGB PNGs)")
    return d


def open_voc(root: Path | str, split: str, aug: bool = False,
             split_fractions: Sequence[float] = (0.7, 0.15, 0.15), strict: bool = True) -> PairDataset:
    root = locate_root(root, ["JPEGImages"], "VOC", ", SegmentationClass/ and ImageSets/ (VOCdevkit/VOC2012)")
    lists = root / "ImageSets" / "Segmentation"
    label_dir = _label_dir(root) if not (aug and split == "train") else root / "SegmentationClassAug"
    classes: Sequence[ClassInfo] = VOC_CLASSES
    decode = decode_index
    names = "the official VOC classes"
    if (root / "labelmap.txt").is_file():
        classes = read_labelmap(root / "labelmap.txt")
        colours = {pack_rgb(*c.color): i for i, c in enumerate(classes)}
        colours.setdefault(pack_rgb(*VOID_COLOUR), IGNORE_INDEX)
        decode = partial(decode_labelmap, colours=colours, num_classes=len(classes),
                         table=f"'{root / 'labelmap.txt'}'")
        names = "labelmap.txt"
    elif (root / "class_names.txt").is_file():
        classes = read_class_names(root / "class_names.txt")
        decode = partial(decode_index, num_classes=len(classes))
        names = "class_names.txt"

    official = (lists / "train.txt").is_file() or (lists / "val.txt").is_file()
    if aug and split == "train":
        if not label_dir.is_dir():
            raise DataError(f"aug=true needs the SBD-augmented masks in '{label_dir}' (SegmentationClassAug/)")
        aug_list = root / "ImageSets" / "SegmentationAug" / "train_aug.txt"
        if aug_list.is_file():
            ids = _read_list(aug_list)
        else:
            val = set(_read_list(lists / "val.txt"))
            ids = sorted(p.stem for p in label_dir.glob("*.png") if p.stem not in val)
        how = "SBD-augmented train set"
    elif official:
        name = "val" if split == "test" and not (lists / "test.txt").is_file() else split
        if not (lists / f"{name}.txt").is_file():
            have = sorted(p.stem for p in lists.glob("*.txt"))
            raise MissingSplit(f"VOC '{root}' has no {split} split: no ImageSets/Segmentation/{name}.txt "
                               f"(it lists {', '.join(have)})")
        ids = _read_list(lists / f"{name}.txt")
        how = f"ImageSets/Segmentation/{name}.txt"
    else:
        default = lists / "default.txt"
        if default.is_file():  # CVAT without subsets
            ids, how = _read_list(default), "ImageSets/Segmentation/default.txt split by file-name hash"
        else:  # labelme: every mask
            ids = sorted(p.stem for p in label_dir.glob("*.png"))
            how = "no ImageSets/: every mask, split by file-name hash"
        ids = [i for i in ids if split_of(i, split_fractions) == split]

    images = {p.stem: p for p in (root / "JPEGImages").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs, problems = [], []
    for i in ids:
        img, lab = images.get(i), label_dir / f"{i}.png"
        if img is None:
            problems.append(f"'{i}' is listed but image '{root / 'JPEGImages' / (i + '.jpg')}' is missing")
        elif not lab.is_file():
            problems.append(f"'{i}' is listed but mask '{lab}' is missing")
        else:
            pairs.append((img, lab))
    kind = "CVAT segmentation mask" if names == "labelmap.txt" else (
        "labelme VOC export" if names == "class_names.txt" else "VOC 2012")
    layout = f"{kind} ({how}; classes from {names})"
    return PairDataset("VOC", root, split, pairs, classes, decode, problems, strict, layout=layout)
