"""The preprocessing spec that travels with a model, and the tensors it makes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from edgeseg.data.base import IGNORE_INDEX, SegDataset
from edgeseg.core.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: what each resize mode does, in words an app developer can implement (the bundle's manifest and README)
RESIZE_RULES = {
    "letterbox": "scale = min(H / frame_h, W / frame_w); resize the frame (bilinear) to h' = round(frame_h * scale) "
                 "x w' = round(frame_w * scale) (halves rounded up) and draw it on a black H x W image at "
                 "top = (H - h') / 2, left = (W - w') / 2 (integer division); the mask's rectangle at the same place, "
                 "resized back to the frame (nearest neighbour), is the frame's mask",
    "stretch": "resize the frame (bilinear) to H x W, aspect ratio not kept; the mask resized back to the frame "
               "(nearest neighbour) is the frame's mask",
    "crop": "scale = max(H / frame_h, W / frame_w); resize the frame (bilinear) to h' = round(frame_h * scale) x "
            "w' = round(frame_w * scale) (halves rounded up) and cut out the H x W centre at top = (h' - H) / 2, "
            "left = (w' - W) / 2 (integer division); the mask covers that centre of the frame only",
}


@dataclass(frozen=True)
class Geometry:
    """Where a ``src_h x src_w`` frame lands in the model input: scaled to ``scaled_h x scaled_w``, placed
    with its top-left corner at ``(top, left)`` of the ``height x width`` input (letterbox: >= 0, the rest
    is padding; crop: <= 0, the frame overhangs and is cut)."""

    scaled_h: int
    scaled_w: int
    top: int
    left: int


@dataclass(frozen=True)
class Preprocess:
    """Fit a frame to ``height x width`` (``resize``: letterbox, stretch or crop; bilinear image, nearest
    mask), then ``(x/255 - mean)/std``. Letterbox pads the image with black (0, 0, 0) and the mask with
    ``IGNORE_INDEX``, so padding counts in neither loss nor metrics."""

    height: int
    width: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "stretch"

    def to_json(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["layout"] = "NCHW RGB float32"
        return d

    @staticmethod
    def from_json(d: dict) -> "Preprocess":
        return Preprocess(int(d["height"]), int(d["width"]), tuple(d["mean"]), tuple(d["std"]),  # type: ignore[arg-type]
                          str(d.get("resize", "stretch")))

    def geometry(self, src_h: int, src_w: int) -> Geometry:
        """The placement of a ``src_h x src_w`` frame (rounded to whole pixels; centred)."""
        H, W = self.height, self.width
        if self.resize == "stretch" or (src_h, src_w) == (H, W):
            return Geometry(H, W, 0, 0)
        # half-up rounding and non-negative integer halves: what Kotlin's Math.round and `/` give the app
        scale = (min if self.resize == "letterbox" else max)(H / src_h, W / src_w)
        sh, sw = max(1, math.floor(src_h * scale + 0.5)), max(1, math.floor(src_w * scale + 0.5))
        if self.resize == "letterbox":
            sh, sw = min(sh, H), min(sw, W)
            return Geometry(sh, sw, (H - sh) // 2, (W - sw) // 2)
        sh, sw = max(sh, H), max(sw, W)
        return Geometry(sh, sw, -((sh - H) // 2), -((sw - W) // 2))

    def _place(self, arr: np.ndarray, resample, fill) -> np.ndarray:
        g = self.geometry(*arr.shape[:2])
        if arr.shape[:2] != (g.scaled_h, g.scaled_w):
            arr = np.asarray(Image.fromarray(arr).resize((g.scaled_w, g.scaled_h), resample))
        if (g.top, g.left) == (0, 0) and arr.shape[:2] == (self.height, self.width):
            return arr
        out = np.full((self.height, self.width, *arr.shape[2:]), fill, arr.dtype)
        # the overlap of the scaled frame and the input, in both coordinate systems
        y0, x0 = max(g.top, 0), max(g.left, 0)
        y1, x1 = min(g.top + g.scaled_h, self.height), min(g.left + g.scaled_w, self.width)
        out[y0:y1, x0:x1] = arr[y0 - g.top:y1 - g.top, x0 - g.left:x1 - g.left]
        return out

    def resize_image(self, img: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 at the model's size (bilinear; letterbox pads black)."""
        if img.shape[:2] == (self.height, self.width):
            return img
        return self._place(img, Image.BILINEAR, 0)

    def image(self, img: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 -> normalized float32 3xHxW at the model's size."""
        return self.normalize(self.resize_image(img))

    def normalize(self, img: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 already at the model's size (:meth:`resize_image`) -> normalized float32 3xHxW."""
        # torch's vectorized kernels: ~4x faster than the same arithmetic in numpy at 512²
        x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).float().div_(255.0)
        x = x.sub_(torch.tensor(self.mean).view(3, 1, 1)).div_(torch.tensor(self.std).view(3, 1, 1))
        return x.contiguous().numpy()

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """Class-index mask -> int64 HxW at the model's size (nearest neighbour; padding = IGNORE_INDEX)."""
        if mask.shape != (self.height, self.width):
            small = mask.max() < 256 if mask.size else True
            m = mask.astype(np.uint8 if small else np.int32)
            mask = self._place(m, Image.NEAREST, IGNORE_INDEX)
        return mask.astype(np.int64)

    def region(self, src_h: int, src_w: int) -> np.ndarray:
        """Bool ``height x width``: the input pixels an ``src_h x src_w`` frame covers (False = letterbox padding)."""
        g = self.geometry(src_h, src_w)
        out = np.zeros((self.height, self.width), bool)
        out[max(g.top, 0):min(g.top + g.scaled_h, self.height), max(g.left, 0):min(g.left + g.scaled_w, self.width)] = True
        return out

    def to_label(self, pred: np.ndarray, label_h: int, label_w: int) -> np.ndarray:
        """A class mask at the model's size -> the ``label_h x label_w`` frame it was made from, as an app
        shows it: letterbox padding cut away, nearest-neighbour resize back; with ``crop`` the cut-off
        border was never seen by the model and is ``IGNORE_INDEX``."""
        g = self.geometry(label_h, label_w)
        y0, x0 = max(g.top, 0), max(g.left, 0)
        y1, x1 = min(g.top + g.scaled_h, self.height), min(g.left + g.scaled_w, self.width)
        part = pred[y0:y1, x0:x1].astype(np.uint8 if pred.max(initial=0) < 256 else np.int32)
        if self.resize != "crop" or (g.top, g.left) == (0, 0):
            return np.asarray(Image.fromarray(part).resize((label_w, label_h), Image.NEAREST)).astype(np.int64)
        # the seen region of the frame: the input window mapped back through the scale
        sy, sx = label_h / g.scaled_h, label_w / g.scaled_w
        fy0, fy1 = round(-g.top * sy), round((-g.top + self.height) * sy)
        fx0, fx1 = round(-g.left * sx), round((-g.left + self.width) * sx)
        out = np.full((label_h, label_w), IGNORE_INDEX, np.int64)
        out[fy0:fy1, fx0:fx1] = np.asarray(Image.fromarray(part).resize((fx1 - fx0, fy1 - fy0), Image.NEAREST))
        return out


class BadSample:
    """What a dataset item becomes when its files cannot be used (the DataError's message)."""

    def __init__(self, message: str) -> None:
        self.message = message


class TensorDataset(torch.utils.data.Dataset):
    """Wraps a SegDataset: preprocessed image tensors and mask tensors, optional augmentation.

    Items are indexed by ``(i, epoch)`` (what :class:`TrainSampler` yields, so persistent workers see the
    current epoch) or by ``i`` alone (epoch 0). A file that raises DataError becomes a :class:`BadSample`, which
    :func:`collate` sets aside and :func:`batches` reports (or skips with ``--skip-bad``).
    """

    def __init__(self, ds: SegDataset, pre: Preprocess, augment: str | None = None, seed: int = 0,
                 distance_maps: bool = False) -> None:
        from edgeseg.data.augment import Augment

        self.ds, self.pre, self.seed = ds, pre, seed
        self.augment = Augment(augment, pre.height, pre.width) if augment else None
        self.distance_maps = distance_maps  # signed distance maps for boundary/distance losses

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index) -> tuple[torch.Tensor, ...] | BadSample:
        i, epoch = index if isinstance(index, tuple) else (index, 0)
        try:
            img, mask = self.ds[i]
        except DataError as e:
            return BadSample(str(e))
        if self.augment is not None:
            # on the evaluation-time resize; randomness depends on (seed, epoch, index) only
            img, mask = self.augment(self.pre.resize_image(img), self.pre.mask(mask), seed=[self.seed, epoch, i])
        x, y = self.pre.image(img), self.pre.mask(mask)
        if self.distance_maps:
            # once per sample, on the loader's CPU side, never per step on the training device
            from edgeseg.losses.distance import signed_distance_maps

            d = signed_distance_maps(y, len(self.ds.classes))
            return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(d)
        return torch.from_numpy(x), torch.from_numpy(y)


class TrainSampler(torch.utils.data.DistributedSampler):
    """torch's DistributedSampler (a permutation per epoch seeded by ``seed + epoch``, padded and sharded
    over ``world`` ranks) that yields ``(index, epoch)`` and can start ``start`` samples into the epoch
    (exact resume from a mid-epoch checkpoint). One process is ``world=1``: the same global order."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        super().__init__(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self):
        order = list(super().__iter__())[self.start:]
        return iter([(i, self.epoch) for i in order])

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation order: rank ``r`` of ``w`` reads samples ``r, r + w, ...`` (no padding, no repeats), so
    per-rank confusion matrices sum to the dataset's."""

    def __init__(self, n: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self):
        return iter([(i, 0) for i in range(self.rank, self.n, self.world)])

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def collate(items: list) -> tuple[tuple[torch.Tensor, ...] | None, list[str]]:
    """Stack the good items; return the bad ones' messages beside them."""
    good = [it for it in items if not isinstance(it, BadSample)]
    bad = [it.message for it in items if isinstance(it, BadSample)]
    return (tuple(torch.utils.data.default_collate(good)) if good else None), bad


def batches(loader, skip_bad: bool = False, skipped: list[str] | None = None, data: str = "DATA"):
    """Tensor batches of a :func:`collate` loader; bad files stop with their list unless ``skip_bad``."""
    for tensors, bad in loader:
        if bad:
            if not skip_bad:
                raise DataError(f"{len(bad)} bad file(s) in this batch:\n  " + "\n  ".join(bad)
                                + f"\nrun 'edgeseg data check {data}' to list every bad file, or train with "
                                  f"--skip-bad to leave them out")
            if skipped is not None:
                skipped.extend(bad)
        if tensors is not None:
            yield tensors


def class_frequencies(ds: SegDataset, num_classes: int, pre: Preprocess | None = None) -> np.ndarray:
    """Pixel count per class over a dataset (ignored pixels excluded)."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for i in range(len(ds)):
        _, m = ds[i]
        if pre is not None:
            m = pre.mask(m)
        m = m[m != IGNORE_INDEX]
        counts += np.bincount(m.ravel(), minlength=num_classes)[:num_classes]
    return counts
