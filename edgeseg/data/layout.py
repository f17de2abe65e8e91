"""What the on-disk dataset formats share: finding the root, pairing files, decoding labels, problems.

A format lists its split as ``(image, label)`` file pairs and gives a ``decode`` that turns a label file
into a class-index map (``IGNORE_INDEX`` = ignored). Problems found while listing (an image without its
label, a label without its image) are collected, not raised one by one: in strict mode (training) they
are raised together; ``edgeseg data check`` reports them with the per-file decode problems.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from edgeseg.data.base import IGNORE_INDEX, ClassInfo
from edgeseg.data.io import read_image
from edgeseg.core.errors import DataError

SHOW_PROBLEMS = 10


def locate_root(root: Path | str, markers: Sequence[str], fmt: str, hint: str = "") -> Path:
    """``root`` if it holds every marker entry; otherwise a DataError suggesting the folder that does.

    Looks two levels down (``VOCdevkit/VOC2012``) and one level up, so a user who points at the parent
    or at a child of the real root is told where it is.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{fmt} root '{root}' does not exist or is not a directory")
    if all((root / m).exists() for m in markers):
        return root
    candidates: list[Path] = []
    for d in [root.parent, *sorted(root.glob("*/")), *sorted(root.glob("*/*/"))]:
        if d.is_dir() and all((d / m).exists() for m in markers):
            candidates.append(d)
    missing = next(m for m in markers if not (root / m).exists())
    msg = f"no {missing}/ under '{root}'"
    if candidates:
        msg += f" — did you mean '{candidates[0]}'?"
    else:
        msg += f"; a {fmt} root holds {', '.join(m + '/' for m in markers)}{hint}"
    raise DataError(msg)


def raise_problems(problems: Sequence[str], where: str) -> None:
    """One DataError listing every listing problem of a split (the first few, then a count)."""
    if not problems:
        return
    shown = "\n  ".join(problems[:SHOW_PROBLEMS])
    more = f"\n  ... and {len(problems) - SHOW_PROBLEMS} more" if len(problems) > SHOW_PROBLEMS else ""
    raise DataError(f"{where}: {len(problems)} problem(s); fix them or run 'edgeseg data check' for the "
                    f"full report:\n  {shown}{more}")


def pair_by_stem(images: Iterable[Path], labels: Iterable[Path], image_key: Callable[[Path], str],
                 label_key: Callable[[Path], str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair image and label files whose keys match; every unpaired file becomes a problem."""
    by_key = {label_key(p): p for p in labels}
    pairs, problems, used = [], [], set()
    for img in sorted(images):
        k = image_key(img)
        lab = by_key.get(k)
        if lab is None:
            problems.append(f"image '{img}' has no label file")
            continue
        used.add(k)
        pairs.append((img, lab))
    for k, lab in sorted(by_key.items()):
        if k not in used:
            problems.append(f"label '{lab}' has no image")
    return pairs, problems


def lookup_table(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A value -> class LUT; unmapped values are -1 (reported as bad label values)."""
    lut = np.full(size, -1, dtype=np.int64)
    for k, v in mapping.items():
        lut[k] = v
    return lut


def apply_lut(raw: np.ndarray, lut: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Map raw label values through ``lut``; a DataError naming the file and the values it cannot map."""
    if raw.size and (raw.min() < 0 or raw.max() >= len(lut)):
        bad = np.unique(raw[(raw < 0) | (raw >= len(lut))])
    else:
        out = lut[raw]
        bad = np.unique(raw[out < 0])
        if not bad.size:
            return out
    raise DataError(f"label '{path}' has values {bad[:8].tolist()} that are not {what}")


class PairDataset:
    """One split of a format whose samples are ``(image file, label file)`` pairs.

    ``decode(path) -> int64 HxW`` class indices with ``IGNORE_INDEX`` for ignored pixels; it raises
    DataError naming the file for bad values. ``problems`` holds the listing problems (strict=False);
    ``layout`` says which on-disk layout was recognised (``edgeseg data check`` prints it).
    """

    def __init__(self, fmt: str, root: Path, split: str, pairs: list[tuple[Path, Path]],
                 classes: Sequence[ClassInfo], decode: Callable[[Path], np.ndarray],
                 problems: Sequence[str] = (), strict: bool = True, layout: str = "") -> None:
        self.fmt, self.root, self.split = fmt, root, split
        self.layout = layout or fmt
        self.pairs = pairs
        self.classes = list(classes)
        self._decode = decode
        self.problems = list(problems)
        if strict:
            raise_problems(self.problems, f"{fmt} '{root}' split '{split}'")
        if not pairs and strict:
            raise DataError(f"{fmt} '{root}' has no samples in split '{split}'")

    def __len__(self) -> int:
        return len(self.pairs)

    def name(self, i: int) -> str:
        return str(self.pairs[i][0])

    def label(self, i: int) -> np.ndarray:
        return self._decode(self.pairs[i][1])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, lab_path = self.pairs[i]
        img = read_image(img_path)
        mask = self._decode(lab_path)
        if mask.shape != img.shape[:2]:
            raise DataError(f"label '{lab_path}' is {mask.shape[1]}x{mask.shape[0]} but image '{img_path}' is "
                            f"{img.shape[1]}x{img.shape[0]}; labels must have the image's size")
        return img, mask


def pack_rgb(r: int, g: int, b: int) -> int:
    """One int per colour, the key of the colour -> class maps."""
    return (r << 16) | (g << 8) | b


def decode_colour(path: Path, colours: dict[int, int], table: str = "the colour table") -> np.ndarray:
    """RGB label -> class map through ``colours`` (packed RGB -> class); a DataError naming the file
    and the colours that ``table`` does not list."""
    rgb = read_image(path).astype(np.int64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    values, inverse = np.unique(packed, return_inverse=True)
    mapped = np.array([colours.get(int(v), -1) for v in values], dtype=np.int64)
    if (mapped < 0).any():
        bad = [((int(v) >> 16) & 255, (int(v) >> 8) & 255, int(v) & 255) for v in values[mapped < 0]][:5]
        raise DataError(f"label '{path}' has colours {bad} that are not in {table}")
    return mapped[inverse].reshape(packed.shape)


def check_class_range(mask: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Class indices must be < ``num_classes`` or ``IGNORE_INDEX``."""
    bad = np.unique(mask[(mask != IGNORE_INDEX) & ((mask < 0) | (mask >= num_classes))])
    if bad.size:
        raise DataError(f"label '{path}' has values {bad[:8].tolist()} outside the {num_classes} classes "
                        f"(0..{num_classes - 1}, {IGNORE_INDEX} = ignore)")
    return mask
