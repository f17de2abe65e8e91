"""Training throughput: ``edgeseg train`` vs a minimal hand-written PyTorch loop on the same model, data and batch.

Both read the same ``TensorDataset`` (embedded data, flip augmentation) with the same batch size and run
AdamW on cross-entropy. edgeseg's figure is its own ``train_images_per_second`` (optimizer steps with
their data loading; validation, checkpoints and precise-BN excluded), the plain loop's is timed the same
way. Each runs in its own process so peak RSS (CPU) or peak allocated CUDA memory is its own. Goal:
edgeseg >= 0.95x the plain loop.

    python benchmarks/train_throughput.py [--model lraspp] [--size 128] [--batch 8] [--images 128] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_edgeseg(a) -> dict:
    from edgeseg.train.config import TrainConfig
    from edgeseg.train.loop import train

    cfg = TrainConfig(model=a.model, data=f"synthetic?train={a.images}&val=8&test=4", image_size=a.size,
                      epochs=a.epochs, batch_size=a.batch, precise_bn_batches=0, seed=0, device=a.device)
    with tempfile.TemporaryDirectory() as tmp:
        ck = train(cfg, Path(tmp) / "run", quiet=True, log=lambda s: None)
    return {"images_per_second": ck.metrics["train_images_per_second"], "device": ck.metrics["device"]}


def run_plain(a) -> dict:
    import torch
    import torch.nn.functional as F

    from edgeseg.data import open_split
    from edgeseg.data.transforms import Preprocess, TensorDataset
    from edgeseg.models import build_model
    from edgeseg.core.device import pick_device

    torch.manual_seed(0)
    device = pick_device(a.device)
    ds = TensorDataset(open_split(f"synthetic?train={a.images}&val=8&test=4", "train", a.size),
                       Preprocess(a.size, a.size), augment="flip")
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, drop_last=True)
    model = build_model(a.model, 5).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    seconds, images = 0.0, 0
    for _ in range(a.epochs):
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y, ignore_index=255)
            loss.backward()
            opt.step()
            loss.item()
            seconds += time.perf_counter() - t0
            images += len(x)
    return {"images_per_second": images / seconds, "device": str(device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lraspp")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mode", choices=("edgeseg", "plain"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode:
        out = run_edgeseg(a) if a.mode == "edgeseg" else run_plain(a)
        out["peak_memory_mb"] = peak_memory_mb(out["device"])
        print(json.dumps(out))
        return
    results = {}
    for mode in ("plain", "edgeseg"):
        p = subprocess.run([sys.executable, __file__, "--mode", mode, *sys.argv[1:]], capture_output=True, text=True)
        if p.returncode:
            sys.exit(f"{mode} run failed:\n{p.stderr[-2000:]}")
        results[mode] = json.loads(p.stdout.strip().splitlines()[-1])
    plain, ours = results["plain"], results["edgeseg"]
    print(f"{a.model} {a.size}x{a.size}, batch {a.batch}, {a.images} images x {a.epochs} epochs on {ours['device']}")
    print(f"  plain PyTorch loop  {plain['images_per_second']:8.1f} images/s   peak {plain['peak_memory_mb']:7.0f} MB")
    print(f"  edgeseg train       {ours['images_per_second']:8.1f} images/s   peak {ours['peak_memory_mb']:7.0f} MB")
    ratio = ours["images_per_second"] / plain["images_per_second"]
    print(f"  edgeseg / plain     {ratio:8.2f}x (goal >= 0.95x)")


if __name__ == "__main__":
    main()
