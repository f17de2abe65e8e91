"""The embedded default dataset: procedural scenes of textured shapes, deterministic from a seed.

Five classes: background, ellipse, rectangle, triangle and a rare ``star`` (in about 1 image
out of 6). Each shape class has its own hue band with jitter, one of three textures (solid,
stripes, speckle), a random size, position and rotation, and shapes overlap (later shapes occlude
earlier ones, in the image and in the mask). Backgrounds are textured gradients with clutter
lines, which are background. Sample ``i`` of a split depends only on ``(seed, split, i)``, so any
subset can be regenerated exactly and nothing is downloaded.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

from edgeseg.data.base import ClassInfo

CLASSES = (
    ClassInfo("background", (0, 0, 0)),
    ClassInfo("ellipse", (230, 25, 75)),
    ClassInfo("rectangle", (60, 180, 75)),
    ClassInfo("triangle", (0, 130, 200)),
    ClassInfo("star", (255, 225, 25)),
)
# Hue centre of each shape class (fraction of the colour wheel); jittered per shape.
_HUES = {1: 0.0, 2: 0.33, 3: 0.6, 4: 0.15}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 400, "val": 60, "test": 40}
RARE_PROB = 0.18


MIN_INSTANCE_PIXELS = 16


class SyntheticShapes:
    """One split of the procedural dataset."""

    classes = CLASSES

    def __init__(self, split: str = "train", size: int = 128, length: int | None = None,
                 seed: int = 0) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, not {split!r}")
        self.split = split
        self.layout = "synthetic scenes (generated)"
        self.size = int(size)
        self.length = DEFAULT_SIZES[split] if length is None else int(length)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def name(self, i: int) -> str:
        return f"synthetic:{self.split}/{i}"

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], i])
        return render_scene(rng, self.size)

    def instances(self, i: int, min_pixels: int = MIN_INSTANCE_PIXELS) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Image and Mask R-CNN targets of scene ``i`` (the instance version of the embedded data): ``boxes`` [K, 4]
        float32 x1y1x2y2 around each shape's visible pixels, ``labels`` [K] (class indices, 1 = ellipse ...),
        ``masks`` [K, H, W] uint8. Shapes occluded down to fewer than ``min_pixels`` visible pixels are left out."""
        if not 0 <= i < self.length:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], i])
        img, mask, inst = render_scene(rng, self.size, with_instances=True)
        boxes, labels, masks = [], [], []
        for k in range(1, int(inst.max()) + 1):
            sel = inst == k
            if sel.sum() < min_pixels:
                continue
            ys, xs = np.nonzero(sel)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(int(mask[sel][0]))
            masks.append(sel.astype(np.uint8))
        n = self.size
        return img, {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64),
                     "masks": np.asarray(masks, np.uint8).reshape(-1, n, n)}


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    c0 = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.85))
    c1 = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.85))
    a = rng.uniform(0, 2 * math.pi)
    t = (np.cos(a) * xx + np.sin(a) * yy)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    img += rng.normal(0, rng.uniform(3, 14), size=(n, n, 1)).astype(np.float32)
    return img


def _polygon(kind: int, cx: float, cy: float, r: float, rot: float, aspect: float) -> list[tuple[float, float]]:
    if kind == 1:  # ellipse
        angles = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        pts = [(r * math.cos(t), r * aspect * math.sin(t)) for t in angles]
    elif kind == 2:  # rectangle
        w, h = r, r * aspect
        pts = [(-w, -h), (w, -h), (w, h), (-w, h)]
    elif kind == 3:  # triangle
        pts = [(r * math.cos(t), r * math.sin(t)) for t in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    else:  # five-pointed star
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            t = -math.pi / 2 + k * math.pi / 5
            pts.append((rr * math.cos(t), rr * math.sin(t)))
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _texture(rng: np.random.Generator, n: int, color: np.ndarray) -> np.ndarray:
    kind = rng.integers(0, 3)
    tex = np.broadcast_to(color, (n, n, 3)).astype(np.float32).copy()
    if kind == 1:  # stripes
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        a = rng.uniform(0, math.pi)
        period = rng.uniform(4, 12)
        wave = 0.5 + 0.5 * np.sign(np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * math.pi / period))
        tex *= (0.65 + 0.35 * wave)[..., None]
    elif kind == 2:  # speckle
        tex += rng.normal(0, 22, size=(n, n, 1)).astype(np.float32)
    return tex


def render_scene(rng: np.random.Generator, n: int, with_instances: bool = False):
    """Draw one scene of side ``n``: returns (RGB uint8 image, int64 class mask), plus the int32 instance map (0 =
    none, k = the k-th shape drawn; later shapes occlude earlier ones) with ``with_instances``. The random draws are
    the same either way, so both views show the same scene."""
    img = _background(rng, n)
    mask = np.zeros((n, n), dtype=np.int64)
    inst = np.zeros((n, n), dtype=np.int32)
    # clutter lines belong to the background class
    clutter = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(clutter)
    for _ in range(rng.integers(0, 4)):
        pts = [tuple(rng.uniform(0, n, 2)) for _ in range(2)]
        draw.line(pts, fill=255, width=int(rng.integers(1, 3)))
    cl = np.asarray(clutter) > 0
    img[cl] = _hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.2, 1.0))

    kinds = list(rng.integers(1, 4, size=rng.integers(2, 6)))
    if rng.random() < RARE_PROB:
        kinds.insert(int(rng.integers(0, len(kinds) + 1)), 4)
    for k, kind in enumerate(kinds, start=1):
        r = rng.uniform(0.08, 0.24) * n
        cx, cy = rng.uniform(0.1 * n, 0.9 * n, 2)
        poly = _polygon(int(kind), cx, cy, r, rng.uniform(0, 2 * math.pi), rng.uniform(0.55, 1.0))
        layer = Image.new("L", (n, n), 0)
        ImageDraw.Draw(layer).polygon(poly, fill=255)
        sel = np.asarray(layer) > 0
        color = _hsv(_HUES[int(kind)] + rng.uniform(-0.06, 0.06), rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
        img[sel] = _texture(rng, n, color)[sel]
        mask[sel] = kind
        inst[sel] = k
    img += rng.normal(0, 3, size=img.shape).astype(np.float32)
    if with_instances:
        return np.clip(img, 0, 255).astype(np.uint8), mask, inst
    return np.clip(img, 0, 255).astype(np.uint8), mask


def write_folder(root, count: int, size: int = 128, seed: int = 0, split: str = "test") -> str:
    """Write ``count`` scenes as a folder-format dataset (``images/NNNNN.png``, ``masks/NNNNN.png`` class
    indices, ``classes.txt``) under ``root``; returns the data spec that reads them all as the test split.
    Real files for tests and benchmarks of the file readers (streaming, broken files)."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    ds = SyntheticShapes(split, size, length=count, seed=seed)
    for i in range(count):
        img, mask = ds[i]
        Image.fromarray(img).save(root / "images" / f"{i:05d}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{i:05d}.png")
    (root / "classes.txt").write_text("\n".join(c.name for c in ds.classes) + "\n")
    return f"folder:{root}?split=0,0,1"
