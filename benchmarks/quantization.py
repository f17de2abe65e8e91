"""int8 that keeps masks: plain TFLite int8 vs NNCF PTQ vs QAT vs mixed precision, per model and dataset.

For each (dataset, model) pair: train briefly, then
  plain  — ``edgeseg export --target tflite --precision int8`` (the TF Lite converter's own calibration),
  ptq    — ``edgeseg quantize --method ptq`` (TFLite on the PTQ-adapted weights, and QDQ ONNX),
  qat    — ``edgeseg quantize --method qat`` (same targets),
  mixed  — the mixed-precision search on the PTQ weights at a stricter agreement threshold (``--mixed-agreement``,
           default 99.9 %, so that the search has something to do), with the float layers it kept and its cost.
Figures: pixel agreement (%) and mask mIoU against the float model on the test split, and the dataset mIoU of
the quantized model against ground truth (float model's in the first column).

    python benchmarks/quantization.py [--data synthetic,isbi] [--models unet,lraspp] [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from edgeseg.train.config import TrainConfig
from edgeseg.core.errors import EdgesegError
from edgeseg.tasks.semantic.run import check_run, export_run
from edgeseg.quantize.run import QuantizeOptions, quantize_run
from edgeseg.train.loop import train

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = {
    "synthetic": ("synthetic", 128),
    "isbi": (f"folder:{SHARED / 'data' / 'isbi-membrane'}?images=image&masks=label&values=0,255"
             f"&classes=membrane,cell", 256),
}
MODELS = {"unet": ("unet", {"base": 16, "depth": 4}), "lraspp": ("lraspp", {}),
          "deeplabv3": ("deeplabv3", {"encoder": "mobilenet_v3_large"})}


def _fmt(r: dict | None) -> str:
    if not r:
        return "—"
    return f"{r['pixel_agreement']:.2f} / {r['mask_miou']:.3f} / {r['exported_miou']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic,isbi")
    ap.add_argument("--models", default="unet,lraspp")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--mixed-agreement", type=float, default=99.9)
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    a = ap.parse_args()
    tmp = None
    root = a.out
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name)
    rows = []
    for data_name in a.data.split(","):
        data, size = DATA[data_name]
        for model_name in a.models.split(","):
            model, kwargs = MODELS[model_name]
            run = root / f"{data_name}-{model_name}"
            t0 = time.time()
            train(TrainConfig(model=model, model_kwargs=kwargs, data=data, image_size=size, epochs=a.epochs,
                              batch_size=8, lr=3e-3, seed=0), run, quiet=True, log=lambda s: None)
            row: dict = {"data": data_name, "model": model_name, "train_s": round(time.time() - t0)}
            export_run(run, "tflite", "int8", log=lambda s: None)
            plain = check_run(run, "tflite", "int8", log=lambda s: None)
            row["float_miou"] = plain.reference_miou
            row["plain"] = plain.to_json()
            for method in ("ptq", "qat"):
                try:
                    s = quantize_run(run, QuantizeOptions(method=method, targets=("tflite", "onnx"),
                                                          epochs=a.qat_epochs), log=lambda s: None)
                except EdgesegError as e:  # a parity failure still wrote its figures
                    print(f"{data_name} {model_name} {method}: {str(e).splitlines()[0]}")
                    s = json.loads((run / "export" / f"quantize-{method}.json").read_text())
                row[method] = s["targets"]
            try:
                s = quantize_run(run, QuantizeOptions(method="ptq", targets=("tflite",), mixed_precision=True,
                                                      min_agreement=a.mixed_agreement), log=lambda s: None)
                row["mixed"] = s.get("mixed")
            except EdgesegError as e:
                row["mixed"] = {"error": str(e).splitlines()[0]}
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("data", "model", "train_s", "float_miou")}), flush=True)
    print()
    print("agreement % / mask mIoU / dataset mIoU of the int8 model (test split; float model's dataset mIoU "
          "in the first column)")
    print(f"| data | model | float mIoU | TFLite plain int8 | TFLite PTQ | TFLite QAT | ONNX PTQ | ONNX QAT | "
          f"mixed (≥ {a.mixed_agreement} %) |")
    print("|---|---|---:|---|---|---|---|---|---|")
    for r in rows:
        m = r["mixed"] or {}
        if "error" in m:
            mixed = m["error"][:90]
        elif not m.get("needed"):
            mixed = f"not needed ({m.get('validation_agreement', 0):.2f} % on val)"
        else:
            ops = ", ".join(x["op"] for x in m["float_layers"])
            mixed = (f"{m['pixel_agreement']:.2f} / {m['mask_miou']:.3f}; {len(m['float_layers'])} float ({ops}); "
                     f"{m['size_cost_bytes'] / 1e3:+.0f} KB; {m['latency_ms']['full_int8']:.1f} -> "
                     f"{m['latency_ms']['mixed']:.1f} ms")
        print(f"| {r['data']} | {r['model']} | {r['float_miou']:.3f} | {_fmt(r['plain'])} | "
              f"{_fmt(r['ptq'].get('tflite-int8-ptq'))} | {_fmt(r['qat'].get('tflite-int8-qat'))} | "
              f"{_fmt(r['ptq'].get('onnx-int8-ptq'))} | {_fmt(r['qat'].get('onnx-int8-qat'))} | {mixed} |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
