"""Forward + backward time of every loss relative to cross-entropy.

Default: 512x512, 19 classes (Cityscapes), batch 8, on CPU (and CUDA when present). Distance maps for
boundary/distance losses are made once beforehand, as the data pipeline does; Hausdorff's per-step
distance transform of the prediction is included in its time. Target: within 3x of CE, except the
losses that need distance maps.

    python benchmarks/losses.py [--size 512] [--classes 19] [--batch 8] [--runs 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from edgeseg.losses import LOSSES, parse_loss
from edgeseg.losses.distance import signed_distance_maps


def bench(spec: str, logits: torch.Tensor, target: torch.Tensor, dist: torch.Tensor, runs: int) -> float:
    loss = parse_loss(spec, logits.shape[1])
    for t in loss.terms:
        t.loss.to(logits.device)
    times = []
    for i in range(runs + 1):
        x = logits.detach().clone().requires_grad_(True)
        # Gated-SCNN's edge terms read its 1-channel edge logits besides the segmentation logits
        out = {"out": x, "edge": x[:, :1]} if loss.reads_outputs else x
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss(out, target, dist).backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        if i:  # the first run warms up
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(a.batch, a.classes, a.size, a.size, generator=g)
    # blocky targets so that boundaries and distance maps look like segmentation masks
    coarse = torch.randint(0, a.classes, (a.batch, a.size // 32, a.size // 32), generator=g)
    target = coarse.repeat_interleave(32, 1).repeat_interleave(32, 2)
    t0 = time.perf_counter()
    dist = torch.from_numpy(np.stack([signed_distance_maps(m.numpy(), a.classes) for m in target]))
    print(f"{a.batch}x{a.classes}x{a.size}x{a.size}; distance maps (once per sample, data pipeline): "
          f"{(time.perf_counter() - t0) * 1000 / a.batch:.0f} ms per sample")
    for dev in devices:
        x, y, d = logits.to(dev), target.to(dev), dist.to(dev)
        ce = bench("ce", x, y, d, a.runs)
        print(f"\n{dev}: {'loss':26s} {'fwd+bwd ms':>10s} {'x CE':>6s}")
        # lovasz(bins=0) is the sorted reference the default bucket sort is tested against
        for name in LOSSES.names() + ["lovasz(bins=0)"]:
            ms = ce if name == "ce" else bench(name, x, y, d, a.runs)
            print(f"{dev}: {name:26s} {ms:10.1f} {ms / ce:6.2f}")


if __name__ == "__main__":
    main()
