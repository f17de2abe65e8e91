"""Train a small U-Net on your own folder of images + masks, export it to TFLite int8 and check it.

Uses the real ISBI 2012 membrane images (../shared/data/isbi-membrane: image/N.png, label/N.png
with values 0 = membrane, 255 = cell interior). Point ROOT at your own folder and change the spec.

    python examples/train_isbi_membranes.py [ROOT] [-o runs/isbi]
"""

import argparse
from pathlib import Path

from edgeseg.train.config import TrainConfig
from edgeseg.tasks.semantic.run import check_run, export_run
from edgeseg.train.loop import train

ap = argparse.ArgumentParser()
ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/isbi-membrane"))
ap.add_argument("-o", "--output", type=Path, default=Path("runs/isbi"))
ap.add_argument("--epochs", type=int, default=15)
a = ap.parse_args()

# values=0,255 maps mask pixel 0 -> class 0 (membrane) and 255 -> class 1 (cell), explicitly.
spec = f"folder:{a.root}?images=image&masks=label&values=0,255&classes=membrane,cell"
cfg = TrainConfig(model="unet", model_kwargs={"base": 16, "depth": 4}, data=spec, image_size=256,
                  epochs=a.epochs, batch_size=4, lr=3e-3, class_weights="median")
train(cfg, a.output, resume=(a.output / "checkpoint.pt").exists())
export_run(a.output, "tflite", "int8")
res = check_run(a.output, "tflite", "int8")
print(f"int8 TFLite: {res.status}, agreement {res.pixel_agreement:.2f} %, mask mIoU {res.mask_miou:.4f}, "
      f"dataset mIoU {res.reference_miou:.4f} -> {res.exported_miou:.4f}")
