"""Cityscapes, read as ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` unpack.

Layout::

    leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      label IDs 0..33
    gtFine/.../<...>_gtFine_instanceIds.png      label ID * 1000 + instance for "thing" classes
    gtCoarse/{train,train_extra,val}/<city>/<...>_gtCoarse_labelIds.png          (mode=coarse)

Label IDs map to the 19 official train IDs (everything else, e.g. ``parking`` or ``license plate``, is
ignored as in ``cityscapesScripts/helpers/labels.py``). The public test labels are blank, so ``test``
reads ``val``. ``mode=coarse`` trains on the coarse labels (``extra=true`` adds ``train_extra``).
A root that holds only some splits (e.g. ``val`` to evaluate) reads those; asking for a missing one raises
:class:`~edgeseg.core.errors.MissingSplit`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.data.base import IGNORE_INDEX, ClassInfo
from edgeseg.data.io import read_mask
from edgeseg.data.layout import PairDataset, apply_lut, locate_root, lookup_table, pair_by_stem
from edgeseg.core.errors import DataError, MissingSplit, UsageError

# (label id, name, train id, colour) for every label of cityscapesScripts' labels.py (license plate, id -1,
# is never stored in the PNGs).
LABELS = (
    (0, "unlabeled", 255, (0, 0, 0)), (1, "ego vehicle", 255, (0, 0, 0)),
    (2, "rectification border", 255, (0, 0, 0)), (3, "out of roi", 255, (0, 0, 0)),
    (4, "static", 255, (0, 0, 0)), (5, "dynamic", 255, (111, 74, 0)), (6, "ground", 255, (81, 0, 81)),
    (7, "road", 0, (128, 64, 128)), (8, "sidewalk", 1, (244, 35, 232)), (9, "parking", 255, (250, 170, 160)),
    (10, "rail track", 255, (230, 150, 140)), (11, "building", 2, (70, 70, 70)), (12, "wall", 3, (102, 102, 156)),
    (13, "fence", 4, (190, 153, 153)), (14, "guard rail", 255, (180, 165, 180)), (15, "bridge", 255, (150, 100, 100)),
    (16, "tunnel", 255, (150, 120, 90)), (17, "pole", 5, (153, 153, 153)), (18, "polegroup", 255, (153, 153, 153)),
    (19, "traffic light", 6, (250, 170, 30)), (20, "traffic sign", 7, (220, 220, 0)),
    (21, "vegetation", 8, (107, 142, 35)), (22, "terrain", 9, (152, 251, 152)), (23, "sky", 10, (70, 130, 180)),
    (24, "person", 11, (220, 20, 60)), (25, "rider", 12, (255, 0, 0)), (26, "car", 13, (0, 0, 142)),
    (27, "truck", 14, (0, 0, 70)), (28, "bus", 15, (0, 60, 100)), (29, "caravan", 255, (0, 0, 90)),
    (30, "trailer", 255, (0, 0, 110)), (31, "train", 16, (0, 80, 100)), (32, "motorcycle", 17, (0, 0, 230)),
    (33, "bicycle", 18, (119, 11, 32)),
)
TRAIN_CLASSES = tuple(ClassInfo(name, color) for _, name, tid, color in sorted(
    (lab for lab in LABELS if lab[2] != 255), key=lambda lab: lab[2]))
LABEL_TO_TRAIN = lookup_table({lid: (tid if tid != 255 else IGNORE_INDEX) for lid, _, tid, _ in LABELS})
# "thing" label IDs that carry instance IDs in *_instanceIds.png
THING_IDS = (24, 25, 26, 27, 28, 29, 30, 31, 32, 33)


def decode_cityscapes(path: Path) -> np.ndarray:
    return apply_lut(read_mask(path), LABEL_TO_TRAIN, path, "Cityscapes label IDs (0..33)")


def read_instances(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``*_instanceIds.png`` -> (train IDs [K], masks [K, H, W] bool, crowd flags [K]).

    Pixels of thing classes hold ``label_id * 1000 + n``; a thing label ID alone (< 1000) marks a crowd
    region (no individual instances). Classes without a train ID are dropped.
    """
    ids = read_mask(path)
    labels, masks, crowd = [], [], []
    for v in np.unique(ids):
        lid = int(v // 1000) if v >= 1000 else int(v)
        if lid not in THING_IDS:
            continue
        tid = int(LABEL_TO_TRAIN[lid])
        if tid == IGNORE_INDEX:
            continue
        labels.append(tid)
        masks.append(ids == v)
        crowd.append(v < 1000)
    h, w = ids.shape
    return (np.asarray(labels, np.int64), np.asarray(masks, bool).reshape(-1, h, w), np.asarray(crowd, bool))


class CityscapesDataset(PairDataset):
    def instances(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Instances of sample ``i`` from its ``*_instanceIds.png`` (see :func:`read_instances`)."""
        lab = self.pairs[i][1]
        path = lab.with_name(lab.name.replace("_labelIds.png", "_instanceIds.png"))
        if not path.is_file():
            raise DataError(f"instance file '{path}' does not exist (needed for instance targets)")
        return read_instances(path)


def open_cityscapes(root: Path | str, split: str, mode: str = "fine", extra: bool = False,
                    strict: bool = True) -> PairDataset:
    root = locate_root(root, ["leftImg8bit"], "Cityscapes", " and gtFine/ (or gtCoarse/)")
    if mode not in ("fine", "coarse"):
        raise UsageError(f"--data cityscapes: mode must be 'fine' or 'coarse', got '{mode}'")
    gt = "gtFine" if mode == "fine" else "gtCoarse"
    if not (root / gt).is_dir():
        raise DataError(f"no {gt}/ under '{root}'; unpack {gt}_trainvaltest.zip beside leftImg8bit/")
    name = "val" if split == "test" else split
    folders = [name] + (["train_extra"] if extra and name == "train" and mode == "coarse" else [])
    pairs, problems = [], []
    for f in folders:
        img_dir, gt_dir = root / "leftImg8bit" / f, root / gt / f
        if not img_dir.is_dir() or not gt_dir.is_dir():
            have = sorted(d.name for d in (root / "leftImg8bit").iterdir()
                          if d.is_dir() and (root / gt / d.name).is_dir())
            missing = "leftImg8bit" if not img_dir.is_dir() else gt
            raise MissingSplit(f"Cityscapes '{root}' has no {split} split: no {missing}/{f}/ "
                               f"(splits here: {', '.join(have) or 'none'})")
        p, q = pair_by_stem(
            img_dir.glob("*/*_leftImg8bit.png"), gt_dir.glob(f"*/*_{gt}_labelIds.png"),
            lambda x: x.parent.name + "/" + x.name[: -len("_leftImg8bit.png")],
            lambda x: x.parent.name + "/" + x.name[: -len(f"_{gt}_labelIds.png")])
        pairs += p
        problems += q
    return CityscapesDataset("Cityscapes", root, split, pairs, TRAIN_CLASSES, decode_cityscapes, problems, strict,
                             layout=f"Cityscapes (leftImg8bit/ + {gt}/, 19 train IDs)")
