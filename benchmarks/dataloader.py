"""Data loading throughput: edgeseg's training loader vs plain PIL decoding of the same files.

Writes a Pascal VOC layout (JPEG images of VOC's typical 500x375 size, palette PNG masks) into a
temporary folder, then measures images/s of

* PIL decode: ``Image.open(...).convert("RGB")`` + mask decode of every pair, one process (the floor
  any loader has to pay);
* edgeseg: the ``TensorDataset`` (VOC reader, resize to 512², normalization), without augmentation
  (what validation and parity checks read) and with ``standard`` augmentation (random scale 0.5-2,
  ignore-padded crop, flip, colour jitter), through a DataLoader with batch 8 and 0 or ``--workers``
  worker processes (persistent, as training uses them).

    python benchmarks/dataloader.py [--images 96] [--size 512] [--workers 2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgeseg.data import open_split
from edgeseg.data.transforms import Preprocess, TensorDataset, TrainSampler, batches, collate
from edgeseg.data.voc import voc_palette


def write_voc(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    palette = [c for rgb in voc_palette() for c in rgb]
    ids = []
    for i in range(n):
        name = f"2007_{i:06d}"
        ids.append(name)
        base = rng.integers(0, 255, (47, 63, 3), dtype=np.uint8)  # smooth-ish content compresses like photos
        img = Image.fromarray(base).resize((500, 375), Image.BICUBIC)
        img.save(root / "JPEGImages" / f"{name}.jpg", quality=90)
        m = np.zeros((375, 500), np.uint8)
        m[50:300, 100:400] = 1 + i % 20
        m[48:52, 100:400] = 255
        mask = Image.fromarray(m, "P")
        mask.putpalette(palette)
        mask.save(root / "SegmentationClass" / f"{name}.png")
    for split in ("train", "val"):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def plain_pil(ds) -> float:
    t0 = time.perf_counter()
    for img, lab in ds.pairs:
        with Image.open(img) as im:
            np.asarray(im.convert("RGB"))
        with Image.open(lab) as im:
            np.asarray(im)
    return len(ds.pairs) / (time.perf_counter() - t0)


def edgeseg_loader(ds, size: int, workers: int, epochs: int, augment: str | None = "standard") -> float:
    tds = TensorDataset(ds, Preprocess(size, size), augment=augment, seed=0)
    loader = torch.utils.data.DataLoader(tds, batch_size=8, sampler=TrainSampler(len(tds), 0),
                                         collate_fn=collate, num_workers=workers, persistent_workers=workers > 0,
                                         drop_last=True)
    seen, t0 = 0, None
    for epoch in range(epochs + 1):  # epoch 0 starts the workers and warms up
        loader.sampler.set_epoch(epoch)
        for x, y in batches(loader):
            assert x.shape[-2:] == (size, size) and y.shape[-2:] == (size, size)
            if t0 is not None:
                seen += len(x)
        if t0 is None:
            t0 = time.perf_counter()
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "VOC2012"
        write_voc(root, a.images)
        ds = open_split(f"voc:{root}", "train")
        pil = plain_pil(ds)
        print(f"{a.images} VOC-layout pairs (500x375 JPEG + palette PNG), output {a.size}x{a.size}, torch threads "
              f"{torch.get_num_threads()}")
        print(f"  plain PIL decode (1 process)                     {pil:7.1f} images/s")
        for aug, label in ((None, "no augmentation (eval path)"), ("standard", "standard augmentation")):
            for w in sorted({0, a.workers}):
                ips = edgeseg_loader(ds, a.size, w, a.epochs, aug)
                print(f"  edgeseg loader, {label:27s} {w} workers {ips:7.1f} images/s  ({ips / pil:.2f}x PIL decode)")


if __name__ == "__main__":
    main()
