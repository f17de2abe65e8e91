"""``edgeseg quantize``: int8 by a named route (ptq, qat, accuracy, aeq, pt2e), each export checked against the float model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgeseg.cli.common import EPILOG, common, log_of
from edgeseg.core.errors import EXIT_OK

def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("quantize", help="int8 that keeps masks: NNCF PTQ, QAT, accuracy control, mixed precision",
                       epilog=EPILOG, formatter_class=fmt,
                       description="Quantize RUN's model with NNCF (ptq, qat, accuracy), ai-edge-quantizer (aeq, "
                       "TFLite) or PT2E + litert-torch (pt2e, TFLite) and export + check each target against the "
                       "full-precision model: RUN/export/<target>-int8-<method>/ (Core ML: coreml-w8a8-<method>), "
                       "with parity.json on the test split; a summary in RUN/export/quantize-<method>.json. ONNX and "
                       "OpenVINO convert NNCF's quantizers; TFLite and Core ML take the quantization-adapted "
                       "weights and calibrate their own int8. Exit 1 when an export misses the threshold.")
    common(p)
    p.add_argument("run", type=Path, help="run directory or checkpoint.pt")
    p.add_argument("--method", required=True, help="ptq (post-training), qat (quantization-aware fine-tuning), "
                   "accuracy (NNCF accuracy control, ONNX/OpenVINO only), aeq (ai-edge-quantizer on the fp32 "
                   "TFLite file, TFLite only: RUN/export/tflite-int8-aeq) or pt2e (torch.export + LiteRT's "
                   "quantizer, fine-tuned --epochs on the int8 grid the file keeps, converted by litert-torch; TFLite "
                   "only: RUN/export/tflite-int8-pt2e)")
    p.add_argument("--targets", help="comma-separated from tflite, onnx, openvino, coreml (default "
                   "tflite,onnx,openvino; aeq, pt2e: tflite)")
    p.add_argument("--calibration", type=int, default=300,
                   help="training images for calibration (default %(default)s or all if fewer; warns under 100, "
                   "refuses under 16)")
    p.add_argument("--preset", default="performance", help="NNCF preset: performance (symmetric) or mixed "
                   "(asymmetric activations)")
    p.add_argument("--ignored-scope", default="", metavar="NODES",
                   help="comma-separated NNCF graph node names to leave in float")
    p.add_argument("--bias-correction", choices=("fast", "full"), default="fast",
                   help="NNCF bias correction (full: slower, often more accurate)")
    p.add_argument("--epochs", type=int, help="qat, pt2e: fine-tuning epochs (default: qat 2, pt2e 4; pt2e: 0 = "
                   "post-training only)")
    p.add_argument("--lr", type=float, help="qat, pt2e: AdamW learning rate (default: qat 1e-5, pt2e 1e-4)")
    p.add_argument("--distill", type=float, default=1.0,
                   help="qat, pt2e: weight of the distillation term (KL to the float model's scores; default "
                   "%(default)s)")
    p.add_argument("--task-weight", type=float, default=0.0,
                   help="qat, pt2e: weight of the run's training loss on the labels (default %(default)s: any weight "
                   "pulls the masks towards the labels and away from the float model's, which is what parity "
                   "measures)")
    p.add_argument("--max-drop", type=float, default=0.01,
                   help="accuracy: largest allowed absolute drop of validation mIoU (default %(default)s)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="tflite: when full int8 misses the threshold on the validation split, keep the most "
                   "sensitive ops in float one at a time until it holds (ptq/qat/aeq: ops of the int8 file ranked by the "
                   "validation mask mIoU with each op alone in float, then also walked from the input; written to "
                   "tflite-int8-<method>-mixed; pt2e: after fine-tuning, activation "
                   "tensors left in float ranked by the validation mask mIoU of the fake-quant graph, written to "
                   "tflite-int8-pt2e-mixed)")
    p.add_argument("--max-float-layers", type=int, help="mixed precision: give up after this many steps (default 40 "
                   "per search order; pt2e: 40 tensors; exit 1 with the best mix reached)")
    p.add_argument("--max-float-macs", type=float, default=10.0, help="mixed precision: at most this %% of "
                   "the multiply-adds in float (default %(default)s)")
    p.add_argument("--ranges", default="minmax", help="aeq: activation ranges, minmax (default: the calibration's "
                   "moving-average min/max; measured best on CamVid val), global (each tensor's smallest and largest "
                   "value over all calibration images: the TF Lite converter's rule and the export's own int8), mse, or "
                   "percentile (the mean of each image's 0.01/99.99th percentiles per tensor)")
    p.add_argument("--equalize", metavar="MODE",
                   help="cross-layer equalization before quantizing: off, weights (the data-free rule: equal "
                   "folded weight ranges on both sides of each conv pair) or activations (stretch each activation "
                   "channel to the tensor's range measured on the calibration images); channels between two "
                   "convolutions joined by BatchNorm/ReLU/pooling are rescaled, float outputs unchanged (default: "
                   "weights for aeq, measured +1.3 points of agreement on CamVid; off for ptq, qat and pt2e: it made "
                   "the TFLite files of ptq and pt2e worse)")
    p.add_argument("--float-ops", default="HARD_SWISH", metavar="TYPES",
                   help="aeq: TFLite op types every file keeps in float, comma-separated, or none (default "
                   "%(default)s: LiteRT's int8 hard-swish made int8 slower than fp32; float, 0.74x fp32 latency, "
                   "same masks)")
    p.add_argument("--min-agreement", type=float, help="parity threshold in %% (default 98)")
    p.add_argument("--min-mask-miou", type=float, help="parity threshold (default 0.95)")
    p.add_argument("--max-miou-drop", type=float, help="largest allowed drop of the dataset mIoU from the float "
                   "model to the int8 export, absolute (default 0.01 = one point)")
    p.add_argument("--max-class-drop", type=float, help="largest allowed drop of any one class's IoU (vs the labels) "
                   "from the float model to the int8 export, absolute (default 0.02 = two points)")
    p.add_argument("--limit", type=int, help="check on the first N test images only")
    p.add_argument("--weights", choices=("auto", "ema", "raw"), default="auto")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(a: argparse.Namespace) -> int:
    from edgeseg.quantize.run import QuantizeOptions, quantize_run

    opts = QuantizeOptions(
        method=a.method, targets=None if a.targets is None else tuple(t.strip() for t in a.targets.split(",")
                                                                     if t.strip()),
        calibration=a.calibration, preset=a.preset,
        ignored=tuple(n.strip() for n in a.ignored_scope.split(",") if n.strip()),
        fast_bias_correction=a.bias_correction == "fast", epochs=a.epochs, lr=a.lr, distill=a.distill,
        task_weight=a.task_weight,
        max_drop=a.max_drop, mixed_precision=a.mixed_precision, max_float_layers=a.max_float_layers,
        max_float_macs=a.max_float_macs, ranges=a.ranges, equalize=a.equalize,
        float_types=() if a.float_ops.strip().lower() == "none" else tuple(t.strip().upper() for t in
                                                                         a.float_ops.split(",") if t.strip()),
        min_agreement=a.min_agreement, min_mask_miou=a.min_mask_miou, max_miou_drop=a.max_miou_drop,
        max_class_drop=a.max_class_drop, limit=a.limit,
        weights=None if a.weights == "auto" else a.weights)
    summary = quantize_run(a.run, opts, log=log_of(a))
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        for name, r in summary["targets"].items():
            print(f"{name:28s} {r['size_bytes'] / 1e6:7.2f} MB  {r['status'].upper():6s} agreement "
                  f"{r['pixel_agreement']:.3f} %  mask mIoU {r['mask_miou']:.4f}  dataset mIoU "
                  f"{r['reference_miou']:.4f} -> {r['exported_miou']:.4f}")
        m = summary.get("mixed")
        if m and m.get("needed") and "name" in m and "float_layers" in m:
            print(f"{m['name']:28s} {len(m['float_layers'])} float layer(s): agreement {m['pixel_agreement']:.3f} %  "
                  f"mask mIoU {m['mask_miou']:.4f}  size {m['size_cost_bytes'] / 1e3:+.1f} KB")
        elif m and m.get("needed") and "float_ops" in m:  # aeq: the targets table has its figures
            print(f"{m['name']:28s} {len(m['float_ops'])} float op(s), {m['float_macs_pct']} % of MACs, "
                  f"{'passed' if m['passed'] else 'missed'} on validation; search {m['search_seconds']:.0f} s")
        for name, r in summary["targets"].items():  # pt2e: how exactly each file is its fake-quant graph
            fq, same = r["details"].get("fake_quant"), r["details"].get("file_vs_fake_quant")
            if fq and same:
                print(f"{name:28s} its fake-quant PyTorch graph: agreement {fq['pixel_agreement']:.3f} %  mask mIoU "
                      f"{fq['mask_miou']:.4f}; the file agrees with that graph on {same['pixel_agreement']:.3f} %")
    return EXIT_OK
