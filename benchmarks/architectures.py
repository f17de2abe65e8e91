"""One table for every architecture/encoder pairing users would ship.

Per pairing: params; MACs, TFLite fp32/int8 size and latency (LiteRT + XNNPACK, 2 threads) at each
``--sizes`` side; and int8 mask parity against PyTorch. Parity needs a model that has learned something:
each pairing is first trained for ``--epochs`` on the embedded synthetic data at 128 px (cached in
``--work``), and its full-int8 TFLite is checked on the 40 test images at that size.

    python benchmarks/architectures.py [--sizes 256 512] [--epochs 4] [--only lraspp deeplabv3] [--json]

Figures are this machine's CPU, not a phone's (see docs/export-and-parity.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeseg.core.latency import measure_latency
from edgeseg.train.config import TrainConfig
from edgeseg.data import open_split
from edgeseg.data.transforms import Preprocess
from edgeseg.models import count_params
from edgeseg.models.macs import count_macs
from edgeseg.tasks.semantic.run import check_run, export_run
from edgeseg.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from edgeseg.train.loop import train
from edgeseg.core.versions import hardware

PAIRINGS = {
    "unet": ("unet", {"base": 32, "depth": 4}),
    "unet+resnet18": ("unet", {"encoder": "resnet18", "base": 16}),
    "deeplabv3+mobilenet_v3_large": ("deeplabv3", {"encoder": "mobilenet_v3_large"}),
    "deeplabv3plus+mobilenet_v2": ("deeplabv3plus", {"encoder": "mobilenet_v2"}),
    "deeplabv3plus+resnet50": ("deeplabv3plus", {"encoder": "resnet50"}),
    "fastfcn+resnet18": ("fastfcn", {"encoder": "resnet18"}),
    "gscnn+resnet18": ("gscnn", {"encoder": "resnet18"}),
    "lraspp+mobilenet_v3_large": ("lraspp", {"encoder": "mobilenet_v3_large"}),
    "lraspp+mobilenet_v3_small": ("lraspp", {"encoder": "mobilenet_v3_small"}),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--only", nargs="*", help="pairings (substring match)")
    ap.add_argument("--work", type=Path, default=Path("runs/architectures"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    import torch

    from exporters import TARGETS, ExportOptions, Normalization

    rows = []
    for key, (name, kw) in PAIRINGS.items():
        if a.only and not any(o in key for o in a.only):
            continue
        run = a.work / key.replace("+", "_")
        if not (run / CHECKPOINT_NAME).exists() or not load_checkpoint(run).state.get("finished"):
            print(f"[{key}] training {a.epochs} epochs at 128 px ...", file=sys.stderr)
            cfg = TrainConfig(model=name, model_kwargs=kw, data="synthetic", image_size=128, epochs=a.epochs)
            train(cfg, run, resume=(run / CHECKPOINT_NAME).exists(), quiet=True, log=lambda s: None)
        ck = load_checkpoint(run)
        model = ck.build_model()
        export_run(run, "tflite", "int8", log=lambda s: None)
        parity = check_run(run, "tflite", "int8", log=lambda s: None)
        row = {"pairing": key, "params": count_params(model), "val_miou_128": ck.metrics["val"]["miou"],
               "int8_agreement": parity.pixel_agreement, "int8_mask_miou": parity.mask_miou,
               "int8_status": parity.status, "sizes": {}}
        train_ds = open_split(ck.config.data, "train", 128)
        for side in a.sizes:
            print(f"[{key}] {side}x{side}: converting and timing ...", file=sys.stderr)
            pre = Preprocess(side, side)
            x = np.random.default_rng(0).standard_normal((1, 3, side, side)).astype(np.float32)
            calib = [pre.image(train_ds[i][0])[None] for i in range(0, len(train_ds), len(train_ds) // 32)]
            entry = {"gmacs": count_macs(model, torch.from_numpy(x)) / 1e9}
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                for precision in ("fp32", "int8"):
                    out = tmp / precision
                    out.mkdir()
                    opts = ExportOptions(precision=precision, calibration=calib, work_dir=tmp,
                                         normalization=Normalization(pre.mean, pre.std))
                    res = TARGETS["tflite"].export(model, x, opts, out)
                    runner = TARGETS["tflite"].load(res.path, threads=2)
                    lat = measure_latency(runner, x, a.runs, 2)
                    entry[precision] = {"size_mb": res.size_bytes / 1e6, "median_ms": lat["median_ms"],
                                        "p90_ms": lat["p90_ms"]}
            row["sizes"][side] = entry
        rows.append(row)
        if not a.json:
            print(_line(row, a.sizes), flush=True)
    if a.json:
        print(json.dumps({"hardware": hardware(), "rows": rows}, indent=2))
    else:
        hw = hardware()
        print(f"\n{hw['cpu']} ({hw['cores']} cores); LiteRT XNNPACK, 2 threads; int8 parity on 40 synthetic test "
              f"images at 128 px after {a.epochs} training epochs")
        print(_header(a.sizes))
        for r in rows:
            print(_line(r, a.sizes))
    return 0


def _header(sizes: list[int]) -> str:
    cols = "".join(f" | {s}²: GMACs, fp32 MB/ms, int8 MB/ms" for s in sizes)
    return f"pairing | params M | val mIoU | int8 agree % / mask mIoU{cols}"


def _line(r: dict, sizes: list[int]) -> str:
    parts = [f"{r['pairing']} | {r['params'] / 1e6:.2f} | {r['val_miou_128']:.3f} | "
             f"{r['int8_agreement']:.2f} / {r['int8_mask_miou']:.3f} ({r['int8_status']})"]
    for s in sizes:
        e = r["sizes"][s]
        parts.append(f"{e['gmacs']:.2f}, {e['fp32']['size_mb']:.1f}/{e['fp32']['median_ms']:.1f}, "
                     f"{e['int8']['size_mb']:.1f}/{e['int8']['median_ms']:.1f}")
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
