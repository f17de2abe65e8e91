"""The preprocessing spec that travels with a model, and the tensors it makes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from edgeseg.data.base import IGNORE_INDEX, SegDataset
from edgeseg.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Resize to ``height x width`` (bilinear image, nearest mask), then ``(x/255 - mean)/std``."""

    height: int
    width: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_json(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["layout"] = "NCHW RGB float32"
        return d

    @staticmethod
    def from_json(d: dict) -> "Preprocess":
        return Preprocess(int(d["height"]), int(d["width"]), tuple(d["mean"]), tuple(d["std"]))  # type: ignore[arg-type]

    def resize_image(self, img: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 at the model's size (bilinear)."""
        if img.shape[:2] != (self.height, self.width):
            img = np.asarray(Image.fromarray(img).resize((self.width, self.height), Image.BILINEAR))
        return img

    def image(self, img: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 -> normalized float32 3xHxW at the model's size."""
        # torch's vectorized kernels: ~4x faster than the same arithmetic in numpy at 512²
        x = torch.from_numpy(np.array(self.resize_image(img), copy=True)).permute(2, 0, 1).float().div_(255.0)
        x = x.sub_(torch.tensor(self.mean).view(3, 1, 1)).div_(torch.tensor(self.std).view(3, 1, 1))
        return x.contiguous().numpy()

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """Class-index mask -> int64 HxW at the model's size (nearest neighbour)."""
        if mask.shape != (self.height, self.width):
            m = Image.fromarray(mask.astype(np.uint8 if mask.max() < 256 else np.int32))
            mask = np.asarray(m.resize((self.width, self.height), Image.NEAREST)).astype(np.int64)
        return mask.astype(np.int64)


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
