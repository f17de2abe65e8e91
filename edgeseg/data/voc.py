"""Pascal VOC 2012 segmentation, read as it unpacks from ``VOCtrainval_11-May-2012.tar``.

Layout::

    VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg
    VOCdevkit/VOC2012/SegmentationClass/2007_000032.png        palette PNG: index = class, 255 = border
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

With ``aug=true`` the SBD-augmented set (10,582 training images) is read from
``SegmentationClassAug/`` (grey PNGs of class indices, as distributed with DeepLab) listed by
``ImageSets/SegmentationAug/train_aug.txt`` (or, when that list is missing, every mask in the folder
that is not in ``val.txt``). VOC's test labels are not public, so ``test`` reads ``val``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.data.base import IGNORE_INDEX, ClassInfo
from edgeseg.data.folder import read_mask
from edgeseg.data.layout import PairDataset, check_class_range, locate_root
from edgeseg.errors import DataError

VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
             "tvmonitor")


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


def decode_voc(path: Path) -> np.ndarray:
    """Palette (or grey) PNG indices 0..20, 255 = border -> class map with ``IGNORE_INDEX`` borders."""
    raw = read_mask(path)
    mask = np.where(raw == 255, IGNORE_INDEX, raw)
    return check_class_range(mask, len(VOC_CLASSES), path)


def open_voc(root: Path | str, split: str, aug: bool = False, strict: bool = True) -> PairDataset:
    root = locate_root(root, ["JPEGImages", "ImageSets"], "VOC", " (VOCdevkit/VOC2012)")
    lists = root / "ImageSets" / "Segmentation"
    name = {"train": "train", "val": "val", "test": "val", "trainval": "trainval"}[split]
    label_dir = root / "SegmentationClass"
    if aug and split == "train":
        label_dir = root / "SegmentationClassAug"
        if not label_dir.is_dir():
            raise DataError(f"aug=true needs the SBD-augmented masks in '{label_dir}' (SegmentationClassAug/)")
        aug_list = root / "ImageSets" / "SegmentationAug" / "train_aug.txt"
        if aug_list.is_file():
            ids = _read_list(aug_list)
        else:
            val = set(_read_list(lists / "val.txt"))
            ids = sorted(p.stem for p in label_dir.glob("*.png") if p.stem not in val)
    else:
        if not label_dir.is_dir():
            raise DataError(f"no SegmentationClass/ under '{root}'; it holds VOC's palette PNG masks")
        ids = _read_list(lists / f"{name}.txt")
    pairs, problems = [], []
    for i in ids:
        img, lab = root / "JPEGImages" / f"{i}.jpg", label_dir / f"{i}.png"
        if not img.is_file():
            problems.append(f"'{i}' is listed but image '{img}' is missing")
        elif not lab.is_file():
            problems.append(f"'{i}' is listed but mask '{lab}' is missing")
        else:
            pairs.append((img, lab))
    return PairDataset("VOC", root, split, pairs, VOC_CLASSES, decode_voc, problems, strict)
