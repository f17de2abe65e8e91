"""Training augmentation for image + mask (+ instance boxes/masks), with torchvision.transforms.v2.

An augmentation spec is a string: ``none``, ``flip`` (default: horizontal flip with p = 0.5),
``standard`` (= ``scale=0.5-2.0,flip=0.5,jitter=0.2``) or comma-separated ``key=value`` items:

* ``scale=LO-HI``: resize (the sample, already at the model's ``height x width`` by the evaluation
  preprocessing) by a random factor in ``[LO, HI]`` (shorter side), then take a random ``height x width``
  crop; where the scaled image is smaller, the crop is padded with black pixels and ignored (255) mask
  pixels.
* ``flip=P``: horizontal flip with probability ``P``.
* ``jitter=J``: colour jitter (brightness, contrast, saturation ``J``) on the image only.
* ``hue=H``: hue jitter ``H`` (at most 0.5); off by default, as it costs ~4x the rest of the
  augmentation on a CPU (an RGB -> HSV round trip per image).

Everything geometric is torchvision's (masks resized with nearest neighbour, boxes moved with the image);
the input is the evaluation-time resize, so at ``scale=1-1`` and ``flip=0`` a sample is exactly what
evaluation and export parity see. Randomness comes from a generator
seeded by ``(seed, epoch, index)``, so a sample's augmentation is reproducible whatever the worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgeseg.data.base import IGNORE_INDEX
from edgeseg.core.errors import UsageError

PRESETS = {"none": "flip=0", "flip": "flip=0.5", "standard": "scale=0.5-2.0,flip=0.5,jitter=0.2"}


@dataclass(frozen=True)
class AugmentSpec:
    scale: tuple[float, float] = (1.0, 1.0)
    flip: float = 0.5
    jitter: float = 0.0
    hue: float = 0.0

    @staticmethod
    def parse(text: str) -> "AugmentSpec":
        text = PRESETS.get(text.strip(), text.strip())
        out: dict = {"scale": (1.0, 1.0), "flip": 0.0, "jitter": 0.0, "hue": 0.0}
        for item in (t.strip() for t in text.split(",") if t.strip()):
            key, sep, value = item.partition("=")
            if not sep or key not in out:
                raise UsageError(f"--augment '{text}': cannot read '{item}'; use none, flip, standard or "
                                 f"scale=LO-HI,flip=P,jitter=J,hue=H")
            try:
                if key == "scale":
                    lo, _, hi = value.partition("-")
                    out["scale"] = (float(lo), float(hi or lo))
                else:
                    out[key] = float(value)
            except ValueError:
                raise UsageError(f"--augment: {key}= takes {'LO-HI' if key == 'scale' else 'a number'}, "
                                 f"got '{value}'") from None
        lo, hi = out["scale"]
        if not 0 < lo <= hi <= 8:
            raise UsageError(f"--augment: scale=LO-HI needs 0 < LO <= HI <= 8, got {lo}-{hi}")
        if not 0 <= out["flip"] <= 1:
            raise UsageError(f"--augment: flip= is a probability in [0, 1], got {out['flip']}")
        if not 0 <= out["jitter"] < 1:
            raise UsageError(f"--augment: jitter= must be in [0, 1), got {out['jitter']}")
        if not 0 <= out["hue"] <= 0.5:
            raise UsageError(f"--augment: hue= must be in [0, 0.5], got {out['hue']}")
        return AugmentSpec(out["scale"], out["flip"], out["jitter"], out["hue"])


class Augment:
    """Random scale + crop (ignore-padded) + flip + colour jitter for one sample at ``height x width``."""

    def __init__(self, spec: AugmentSpec | str, height: int, width: int) -> None:
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        self.spec = AugmentSpec.parse(spec) if isinstance(spec, str) else spec
        self.height, self.width = height, width
        steps: list = []
        lo, hi = self.spec.scale
        if (lo, hi) != (1.0, 1.0):
            short = min(height, width)
            steps += [v2.RandomResize(max(1, round(short * lo)), max(2, round(short * hi)) + 1, antialias=True),
                      v2.RandomCrop((height, width), pad_if_needed=True,
                                    fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX, "others": 0})]
        if self.spec.flip > 0:
            steps.append(v2.RandomHorizontalFlip(self.spec.flip))
        if self.spec.jitter > 0 or self.spec.hue > 0:
            j = self.spec.jitter
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=self.spec.hue or None))
        self.transform = v2.Compose(steps) if steps else (lambda *x: x)
        self._tv = tv_tensors

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: list[int] | None = None,
                 instances: dict | None = None):
        """RGB uint8 HxWx3 + int64 HxW mask at ``height x width`` -> augmented ``(image, mask)``.

        With ``instances`` (``boxes`` [K, 4] x1y1x2y2, ``masks`` [K, H, W], ``labels``) the boxes and instance
        masks follow the same geometry; instances cropped away are dropped. Returns ``(image, mask,
        instances)`` then.
        """
        tv = self._tv
        img = tv.Image(torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1))
        # masks are resized with nearest neighbour; int64 is not resizable, and 255 fits in uint8
        sem = tv.Mask(torch.from_numpy(mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.int32)))
        inputs: tuple = (img, sem)
        if instances is not None:
            h, w = image.shape[:2]
            boxes = tv.BoundingBoxes(torch.as_tensor(instances["boxes"], dtype=torch.float32), format="XYXY",
                                     canvas_size=(h, w))
            inst = tv.Mask(torch.as_tensor(instances["masks"], dtype=torch.uint8))
            inputs = (img, sem, {"boxes": boxes, "masks": inst,
                                 "labels": torch.as_tensor(instances["labels"], dtype=torch.int64)})
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
            out = self.transform(*inputs)
        image_out = out[0].permute(1, 2, 0).numpy()
        mask_out = out[1].numpy().astype(np.int64)
        if instances is None:
            return image_out, mask_out
        target = out[2]
        keep = (target["boxes"][:, 2] > target["boxes"][:, 0]) & (target["boxes"][:, 3] > target["boxes"][:, 1])
        if len(target["masks"]):
            keep &= (target["masks"].flatten(1) > 0).any(1)
        return image_out, mask_out, {"boxes": target["boxes"][keep].numpy(), "labels": target["labels"][keep].numpy(),
                                     "masks": target["masks"][keep].numpy()}
