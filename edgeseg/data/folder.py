"""The folder format: ``images/`` + ``masks/`` PNG class-index masks with matching file stems.

Layout (either)::

    root/images/a.png  root/masks/a.png          (split deterministically by ``split=``)
    root/{train,val,test}/images/...  root/{train,val,test}/masks/...

Options (in the data spec, ``folder:ROOT?images=image&masks=label&values=0,255&classes=membrane,cell``):

* ``images``/``masks``: sub-folder names (default ``images``/``masks``).
* ``values``: the mask pixel values of class 0, 1, ... in order (e.g. ``0,255`` for binary masks
  stored as 0/255). Without it a mask pixel value *is* the class index.
* ``classes``: class names; otherwise ``root/classes.txt`` (one ``name`` or ``name R G B`` per line),
  otherwise ``class0, class1, ...`` from ``values`` or from the largest value found.
* ``ignore``: a mask value to ignore (e.g. ``255`` for VOC-style borders) when ``values`` is not given.
* ``split``: train/val/test fractions for a flat folder (default ``0.7,0.15,0.15``).

A folder with images but no masks folder (or just images) is **unlabelled**: ``edgeseg check --data
folder:IMAGES`` measures parity on it (agreement, mask mIoU vs the reference) and leaves the task figures out;
every image is in every split, and training refuses it.

Every bad file raises :class:`DataError` naming the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgeseg.data.base import IGNORE_INDEX, ClassInfo, default_colors
from edgeseg.data.io import IMAGE_SUFFIXES, SPLITS, parse_classes_txt, read_image, read_mask, split_of
from edgeseg.core.errors import DataError, UsageError

class FolderDataset:
    """One split of a folder-format dataset."""

    def __init__(self, root: Path | str, split: str = "train", images: str = "images", masks: str = "masks",
                 values: Sequence[int] | None = None, classes: Sequence[str] | None = None,
                 ignore: int | None = None, split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
                 strict: bool = True) -> None:
        from edgeseg.data.layout import raise_problems

        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dataset folder '{self.root}' does not exist or is not a directory")
        if split not in SPLITS:
            raise UsageError(f"split must be one of {', '.join(SPLITS)}, not '{split}'")
        self.split = split
        if abs(sum(split_fractions) - 1.0) > 1e-6 or len(split_fractions) != 3:
            raise UsageError(f"split fractions must be three numbers summing to 1, got {list(split_fractions)}")

        if (self.root / split / images).is_dir():
            img_dir, mask_dir = self.root / split / images, self.root / split / masks
            keep = None
            self.layout = f"folder with split folders ({split}/{images}/ + {split}/{masks}/)"
        else:
            img_dir, mask_dir = self.root / images, self.root / masks
            keep = split
            self.layout = f"flat folder ({images}/ + {masks}/), split by file-name hash"
        if not img_dir.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in self.root.iterdir()):
            img_dir = self.root  # a folder of images, as an app team has them
        #: False for images without masks (``edgeseg check --data`` on what an app sees): every image is in
        #: every split, masks are all ignored, and the task figures are left out
        self.labelled = mask_dir.is_dir()
        if not self.labelled and img_dir.is_dir():
            keep = None
            self.layout = f"images without masks ({img_dir}): every image in every split, no task figures"
        for d, what in ((img_dir, "images"), (mask_dir if self.labelled else img_dir, "masks")):
            if not d.is_dir():
                raise DataError(
                    f"dataset folder '{self.root}' has no {what} folder '{d.relative_to(self.root)}'; "
                    f"expected images/ and masks/ (or name them with ?images=...&masks=...)"
                )
        self.pairs: list[tuple[Path, Path]] = []
        self.problems: list[str] = []
        mask_by_stem = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"} if self.labelled else {}
        for p in sorted(img_dir.iterdir(), key=lambda q: (len(q.stem), q.stem)):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if keep is not None and split_of(p.stem, split_fractions) != keep:
                continue
            m = mask_by_stem.get(p.stem)
            if not self.labelled:
                self.pairs.append((p, None))  # type: ignore[arg-type]
                continue
            if m is None:
                self.problems.append(f"image '{p}' has no mask '{mask_dir / (p.stem + '.png')}'")
                continue
            self.pairs.append((p, m))
        if strict:
            raise_problems(self.problems, f"dataset folder '{self.root}' split '{split}'")
        if not self.pairs:
            raise DataError(f"dataset folder '{self.root}' has no images in split '{split}'")

        self.values = list(values) if values is not None else None
        self.ignore = ignore
        names: list[str] | None = list(classes) if classes else None
        infos: list[ClassInfo] | None = None
        if names is None and (self.root / "classes.txt").is_file():
            infos = parse_classes_txt(self.root / "classes.txt")
        if infos is None and names is None and not self.labelled:
            infos = []  # no masks to count classes in: the model's classes are used
        if infos is None:
            if names is None:
                n = len(self.values) if self.values is not None else self._max_value() + 1
                names = [f"class{i}" for i in range(n)]
            infos = [ClassInfo(n, c) for n, c in zip(names, default_colors(len(names)))]
        if self.values is not None and len(self.values) != len(infos):
            raise UsageError(
                f"values= lists {len(self.values)} mask values but there are {len(infos)} classes "
                f"({', '.join(i.name for i in infos)}); give one value per class"
            )
        self.classes = infos
        if self.values is not None:
            self._lut = np.full(max(max(self.values), 255) + 1, -1, dtype=np.int64)
            for idx, v in enumerate(self.values):
                self._lut[v] = idx

    def _max_value(self) -> int:
        top = 0
        for _, m in self.pairs:
            arr = read_mask(m)
            vals = arr[arr != self.ignore] if self.ignore is not None else arr
            top = max(top, int(vals.max()) if vals.size else 0)
        return top

    def __len__(self) -> int:
        return len(self.pairs)

    def name(self, i: int) -> str:
        return str(self.pairs[i][0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, mask_path = self.pairs[i]
        img = read_image(img_path)
        if not self.labelled:
            return img, np.full(img.shape[:2], IGNORE_INDEX, np.int64)
        raw = read_mask(mask_path)
        if raw.shape != img.shape[:2]:
            raise DataError(
                f"mask '{mask_path}' is {raw.shape[1]}x{raw.shape[0]} but image '{img_path}' is "
                f"{img.shape[1]}x{img.shape[0]}; masks must have the image's size"
            )
        if self.values is not None:
            if raw.min() < 0 or raw.max() >= len(self._lut):
                bad = np.unique(raw)
            else:
                mapped = self._lut[raw]
                bad = np.unique(raw[mapped < 0])
            if bad.size:
                raise DataError(
                    f"mask '{mask_path}' has values {bad[:8].tolist()} not in values={self.values}; "
                    f"list every mask value, one per class"
                )
            return img, mapped
        mask = raw.copy()
        if self.ignore is not None:
            mask[raw == self.ignore] = IGNORE_INDEX
        valid = mask != IGNORE_INDEX
        bad = np.unique(mask[valid & ((mask < 0) | (mask >= len(self.classes)))])
        if bad.size:
            raise DataError(
                f"mask '{mask_path}' has values {bad[:8].tolist()} outside the {len(self.classes)} classes "
                f"({', '.join(c.name for c in self.classes)}); fix the mask or declare the classes"
            )
        return img, mask
