"""What every dataset provides, and the class list that travels with a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from edgeseg.core.metrics import IGNORE_INDEX  # noqa: F401 - datasets and transforms take it from here


@dataclass(frozen=True)
class ClassInfo:
    """A class name and the RGB colour used to draw it."""

    name: str
    color: tuple[int, int, int]

    def to_json(self) -> dict:
        return {"name": self.name, "color": list(self.color)}

    @staticmethod
    def from_json(d: dict) -> "ClassInfo":
        return ClassInfo(str(d["name"]), tuple(int(c) for c in d["color"]))  # type: ignore[arg-type]


# A palette that stays readable for the first classes (background black), then golden-angle hues.
def default_colors(n: int) -> list[tuple[int, int, int]]:
    base = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
    out = list(base[:n])
    i = len(out)
    while len(out) < n:
        h = (i * 0.618033988749895) % 1.0
        import colorsys

        r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
        i += 1
    return out


class SegDataset(Protocol):
    """A split of a semantic-segmentation dataset.

    ``__getitem__`` returns ``(image, mask)``: RGB uint8 ``HxWx3`` and int64 ``HxW`` class indices
    (``IGNORE_INDEX`` = ignored). ``name(i)`` names the sample (its file) for error messages.
    """

    classes: Sequence[ClassInfo]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]: ...

    def name(self, i: int) -> str: ...
