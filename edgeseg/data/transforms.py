"""The preprocessing spec that travels with a model, and the tensors it makes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from edgeseg.data.base import IGNORE_INDEX, SegDataset

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

    def image(self, img: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 -> normalized float32 3xHxW at the model's size."""
        if img.shape[:2] != (self.height, self.width):
            img = np.asarray(Image.fromarray(img).resize((self.width, self.height), Image.BILINEAR))
        x = img.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """Class-index mask -> int64 HxW at the model's size (nearest neighbour)."""
        if mask.shape != (self.height, self.width):
            m = Image.fromarray(mask.astype(np.uint8 if mask.max() < 256 else np.int32))
            mask = np.asarray(m.resize((self.width, self.height), Image.NEAREST)).astype(np.int64)
        return mask.astype(np.int64)


class TensorDataset(torch.utils.data.Dataset):
    """Wraps a SegDataset: preprocessed image tensors and mask tensors, optional flip augmentation."""

    def __init__(self, ds: SegDataset, pre: Preprocess, augment: bool = False, seed: int = 0,
                 distance_maps: bool = False) -> None:
        self.ds, self.pre, self.augment, self.seed = ds, pre, augment, seed
        self.distance_maps = distance_maps  # signed distance maps for boundary/distance losses
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        img, mask = self.ds[i]
        x, y = self.pre.image(img), self.pre.mask(mask)
        # Augmentation randomness depends on (seed, epoch, index) only: resumable and worker-safe.
        if self.augment and np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5:
            x, y = x[:, :, ::-1].copy(), y[:, ::-1].copy()
        if self.distance_maps:
            # once per sample, on the loader's CPU side, never per step on the training device
            from edgeseg.losses.distance import signed_distance_maps

            d = signed_distance_maps(y, len(self.ds.classes))
            return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(d)
        return torch.from_numpy(x), torch.from_numpy(y)


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
