"""torchvision's pretrained COCO-VOC segmentation models through edgeseg: import -> export -> check.

    python benchmarks/import_pretrained.py --data voc:/data/VOCdevkit/VOC2012 [--limit 200]
    python benchmarks/import_pretrained.py --data "coco:/data/coco?categories=voc"

Imports ``lraspp_mobilenet_v3_large`` and ``deeplabv3_mobilenet_v3_large`` with their
``COCO_WITH_VOC_LABELS_V1`` weights (downloaded by torchvision: needs network), exports TFLite fp32 / fp16 /
int8 and Core ML fp16, checks each on the labelled images of ``--data`` (its test split; VOC's and COCO's
test read val) and prints agreement, mask mIoU, dataset mIoU of PyTorch and of the export, size and time.
Offline it says what it needs and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large")
EXPORTS = (("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"), ("coreml", "fp16"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="labelled VOC-class images: voc:PATH or coco:PATH?categories=voc")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--image-size", default="520", help="export input size (torchvision evaluates at 520)")
    ap.add_argument("--limit", type=int, help="check on the first N test images")
    ap.add_argument("--out", type=Path, default=Path("runs/import-pretrained"))
    a = ap.parse_args()

    from edgeseg.cli import main as edgeseg
    from edgeseg.core.errors import EdgesegError
    from edgeseg.steps.importer import import_model

    rows = []
    for name in a.models.split(","):
        run = a.out / name
        if not (run / "checkpoint.pt").exists():
            try:
                import_model(run, f"torchvision:{name}?weights=COCO_WITH_VOC_LABELS_V1", data=a.data,
                             image_size=a.image_size)
            except EdgesegError as e:
                print(f"import_pretrained: {e}\nIt needs network access to download torchvision's weights "
                      f"(or run it where they are cached in ~/.cache/torch/hub/checkpoints).", file=sys.stderr)
                return 2
        for target, precision in EXPORTS:
            t0 = time.time()
            if edgeseg(["export", str(run), "--target", target, "--precision", precision, "-q"]) != 0:
                rows.append((name, f"{target} {precision}", "export failed", "", "", "", ""))
                continue
            seconds = time.time() - t0
            limit = ["--limit", str(a.limit)] if a.limit else []
            edgeseg(["check", str(run), "--target", target, "--precision", precision, "-q", *limit])
            d = run / "export" / f"{target}-{precision}"
            p = json.loads((d / "parity.json").read_text())
            rec = json.loads((d / "export.json").read_text())
            rows.append((name, f"{target} {precision}", p["status"], f"{p.get('pixel_agreement') or 0:.3f}",
                         f"{p.get('mask_miou') or 0:.4f}",
                         f"{p.get('reference_miou') or 0:.4f} -> {p.get('exported_miou') or 0:.4f}",
                         f"{rec.get('size_bytes', 0) / 1e6:.2f} MB, {seconds:.0f} s"))
    print("| model | export | parity | agreement % | mask mIoU | dataset mIoU (PyTorch -> export) | size, export time |")
    print("|---|---|---|---:|---:|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
