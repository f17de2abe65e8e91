"""Reading what datasets are made of: image and mask files, ``classes.txt``, and the stable split of a sample."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgeseg.core.errors import DataError
from edgeseg.data.base import ClassInfo, default_colors

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")


def read_image(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8 HxWx3; DataError naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image '{path}' does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"image '{path}' cannot be decoded ({e}); replace or remove the file") from None


def read_mask(path: Path) -> np.ndarray:
    """Read a single-channel mask PNG as its raw integer values (palette PNGs give their indices)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA"):
                arr = np.asarray(im)
                if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
                    raise DataError(
                        f"mask '{path}' is a colour image; masks must hold class indices "
                        f"(single channel or palette PNG)"
                    )
                return arr[..., 0].astype(np.int64)
            return np.asarray(im).astype(np.int64)
    except FileNotFoundError:
        raise DataError(f"mask '{path}' does not exist") from None
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"mask '{path}' cannot be decoded ({e}); replace or remove the file") from None


def parse_classes_txt(path: Path) -> list[ClassInfo]:
    """``classes.txt``: one class a line, ``name`` or ``name R G B``; ``#`` comments and blank lines skipped."""
    names, colors = [], []
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) == 4:
            try:
                colors.append(tuple(int(p) for p in parts[1:]))
            except ValueError:
                raise DataError(f"{path}:{ln}: expected 'name' or 'name R G B', got {line!r}") from None
            names.append(parts[0])
        elif len(parts) == 1:
            names.append(parts[0])
            colors.append(None)
        else:
            raise DataError(f"{path}:{ln}: expected 'name' or 'name R G B', got {line!r}")
    fallback = default_colors(len(names))
    return [ClassInfo(n, c or fallback[i]) for i, (n, c) in enumerate(zip(names, colors))]


def split_of(stem: str, fractions: Sequence[float]) -> str:
    """The split (train/val/test) of a sample named ``stem`` for split ``fractions`` (train, val, test)."""
    # A hash of the stem, not the listing order, so adding a file never reshuffles the others.
    h = int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if h < fractions[0]:
        return "train"
    if h < fractions[0] + fractions[1]:
        return "val"
    return "test"
