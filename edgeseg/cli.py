"""The ``edgeseg`` command line. Each subcommand parses arguments and calls one library function.

Exit codes: 0 success; 1 failure (bad file, failed conversion, failed parity check); 2 usage error;
3 a requested check could not run here (e.g. Core ML compute units need macOS) and is NOT reported as passed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from edgeseg import __version__
from edgeseg.core.errors import EXIT_FAILURE, EXIT_NOT_VERIFIED, EXIT_OK, EXIT_USAGE, EdgesegError, UsageError

EPILOG = """exit codes:
  0  success (every check that ran passed)
  1  failure: bad data or checkpoint, failed conversion, failed parity threshold
  2  usage error (unknown name, bad value, output path is a file)
  3  a requested check could not run on this platform (Core ML compute units need macOS): not a pass
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks and converter logs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or progress lines")


def _fraction(name: str):
    def parse(v: str) -> float:
        try:
            f = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes a number between 0 and 1, not {v!r}") from None
        if not 0.0 <= f <= 1.0:
            raise argparse.ArgumentTypeError(f"{name} takes a number between 0 and 1, not {v}")
        return f

    return parse


def _instance_check_args(q: argparse.ArgumentParser) -> None:
    """The parity options shared by ``maskrcnn export`` and ``maskrcnn check``."""
    q.add_argument("--limit", type=int, default=8, help="test images for the parity check")
    q.add_argument("--score-threshold", type=_fraction("--score-threshold"), default=0.3,
                   help="detections scoring below this on both sides are not counted (default 0.3)")
    q.add_argument("--min-mask-iou", type=_fraction("--min-mask-iou"),
                   help="minimum mean matched mask IoU (fp32 0.97, fp16 0.95, int8 0.85)")
    q.add_argument("--min-box-iou", type=_fraction("--min-box-iou"),
                   help="minimum mean matched box IoU (defaults as --min-mask-iou)")
    q.add_argument("--max-unmatched", type=_fraction("--max-unmatched"),
                   help="maximum (missed + extra) / reference detections (fp32 0.02, fp16 0.05, int8 0.10)")
    q.add_argument("--max-ap-drop", type=_fraction("--max-ap-drop"),
                   help="maximum mask-AP drop (fp32 0.01, fp16 0.02, int8 0.05)")


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(prog="edgeseg", description="Train segmentation models, export them to "
                                 "TFLite and Core ML, and prove the exported masks match.",
                                 epilog=EPILOG, formatter_class=fmt)
    ap.add_argument("--version", action="version", version=f"edgeseg {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model; writes RUN/checkpoint.pt", epilog=EPILOG, formatter_class=fmt,
                       description="Train a registered architecture on a dataset (CUDA when available, "
                       "else CPU). Writes a self-describing checkpoint every epoch; --resume continues it.")
    _common(p)
    p.add_argument("-o", "--output", type=Path, default=Path("runs/train"), help="run directory (default: %(default)s)")
    p.add_argument("--config", type=Path, help="YAML file of TrainConfig keys; flags override it")
    p.add_argument("--model", help="architecture (see 'edgeseg models'; default lraspp; maskrcnn trains instance "
                   "segmentation, like 'edgeseg maskrcnn train')")
    p.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture option, e.g. base=16 (repeatable)")
    p.add_argument("--data", help="dataset spec FORMAT[:PATH][?opt=v&..]: synthetic (default), "
                   "folder:PATH?values=0,255, voc:VOCdevkit/VOC2012?aug=true, coco:PATH, "
                   "cityscapes:PATH?mode=fine, camvid:PATH?classes=11 (README: Datasets)")
    p.add_argument("--categories", help="COCO category subset: all, voc or names (same as ?categories=)")
    p.add_argument("--augment", help="flip (default), none, standard (scale 0.5-2 + crop + flip + colour "
                   "jitter) or scale=LO-HI,flip=P,jitter=J")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 0 on CPU, 4 on CUDA)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable/invalid data files (counted and listed in metrics.json) "
                   "instead of stopping at the first one")
    p.add_argument("--image-size", metavar="SIZE",
                   help="model input: a side (256) or HEIGHTxWIDTH (360x480, 144x256; height first as in tensor "
                   "shapes); default 128")
    p.add_argument("--resize", choices=("letterbox", "stretch", "crop"),
                   help="how frames of another aspect ratio fit the input: letterbox (default; scale to fit, pad "
                   "black, padding ignored in loss and metrics), stretch, or crop (scale to cover, centre crop); "
                   "recorded in the checkpoint and the bundle so the app does the same")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--schedule", help="cosine (default) or poly")
    p.add_argument("--class-weights", help="none (default), inverse or median frequency balancing")
    p.add_argument("--loss", help="loss spec, e.g. 'ce' (default), 'ce + 0.5*dice', 'ce + lovasz@10', "
                   "'dice + 0.01*boundary'; names: ce focal topk dpce dice jaccard sensitivity_specificity "
                   "lovasz boundary hausdorff dual_task edge_bce edge_attention (gscnn)")
    p.add_argument("--accumulate", type=int, help="micro-batches per optimizer step (effective batch = "
                   "--batch-size x --accumulate)")
    p.add_argument("--clip-grad", type=float, help="clip the gradient norm to this value")
    p.add_argument("--ema", type=float, help="keep an exponential moving average of the weights with this decay "
                   "(e.g. 0.999)")
    p.add_argument("--export-weights", choices=("ema", "raw"), help="with --ema: which weights validation and "
                   "export use (default ema)")
    p.add_argument("--precise-bn-batches", type=int, help="training batches that re-estimate BatchNorm "
                   "statistics at the end (default 25; 0 = off)")
    p.add_argument("--patience", type=int, help="stop after this many epochs without a better val mIoU")
    p.add_argument("--checkpoint-every", type=int, help="also checkpoint every N optimizer steps (default: "
                   "epoch ends only)")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), help="mixed precision on CUDA: auto "
                   "(default: bf16 where the GPU has it, else fp16), bf16, fp16 (with a grad scaler) or off; "
                   "CPU training is always float32")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model for training")
    p.add_argument("--sync-bn", action="store_true", default=None, help="SyncBatchNorm across processes (CUDA)")
    p.add_argument("--nproc-per-node", type=int, help="run N processes on this machine with torchrun (DDP: NCCL on CUDA, gloo on CPU; "
                   "1 = one process through the same path); --batch-size is the global batch. Several machines: "
                   "torchrun ... -m edgeseg train ...")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu or cuda[:N]")
    p.add_argument("--init-from", type=Path, help="start from the weights of another edgeseg checkpoint")
    p.add_argument("--resume", action="store_true", help="continue the run in -o from its last epoch")

    p = sub.add_parser("export", help="export a run's model to a target", epilog=EPILOG, formatter_class=fmt,
                       description="Export RUN's checkpoint to RUN/export/<target>-<precision>/.")
    _common(p)
    p.add_argument("run", type=Path, help="run directory or checkpoint.pt")
    p.add_argument("--target", required=True, help="tflite, coreml, onnx or openvino; several comma-separated, "
                   "or all: one process exports them all (model, calibration images, ONNX/SavedModel and each "
                   "toolchain's import shared); TARGET:PRECISION names one pair whatever --precision says "
                   "(e.g. --target tflite,coreml:fp16 --precision all)")
    p.add_argument("--precision", help="tflite: fp32|fp16|int8; coreml: fp32|fp16|int8|palettize4|palettize6|"
                   "palettize8 (k-means; add -uniform for uniform palettes)|w8a8; onnx: fp32|int8 (QDQ, NNCF "
                   "PTQ); openvino: fp32|int8 (NNCF PTQ). Several comma-separated (each target takes those it "
                   "has), or all (every precision of each target); default: each target's first")
    p.add_argument("--output", default="logits", choices=("logits", "argmax"),
                   help="logits (default) or an in-graph argmax class map (tflite: uint8, coreml: int32)")
    p.add_argument("--input", dest="input_kind", default="image", choices=("image", "multiarray", "pixels"),
                   help="coreml: image (ImageType pixels, default) or multiarray (normalized floats); tflite: "
                   "image (normalized floats, default) or pixels (RGB 0-255, normalization in the graph; uint8 "
                   "for int8; what MediaPipe and Android camera code feed)")
    p.add_argument("--deployment-target", choices=("iOS16", "iOS17", "iOS18"),
                   help="coreml: minimum iOS (default iOS16; w8a8 needs iOS17)")
    p.add_argument("--calibration", type=int, default=100,
                   help="training images used to calibrate int8 (default %(default)s, or all if fewer)")
    p.add_argument("--weights", choices=("auto", "ema", "raw"), default="auto",
                   help="for runs trained with --ema: export the EMA or the raw weights (default: the run's "
                   "--export-weights)")
    p.add_argument("--score-threshold", type=float, default=0.3,
                   help="Mask R-CNN runs: detections scoring below it are not compared (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the export record as JSON (a list for several)")

    p = sub.add_parser("check", help="mask parity of an export vs PyTorch", epilog=EPILOG, formatter_class=fmt,
                       description="Run the exported model and the PyTorch reference on the test split and "
                       "compare their masks. Default thresholds: fp32 >= 99.9 %% agreement; fp16 >= 99.5 %%; "
                       "int8, palettized and w8a8 >= 98 %% and mask mIoU >= 0.95; every precision: the dataset "
                       "mIoU (vs the labels) drops by at most 0.01 (one point) from PyTorch to the export.")
    _common(p)
    p.add_argument("run", type=Path)
    p.add_argument("--target", required=True, help="as for export: one, several comma-separated, or all (the "
                   "test images and the reference are read once for every export)")
    p.add_argument("--precision", help="as for export: one, several comma-separated, or all")
    p.add_argument("--min-agreement", type=float, help="minimum pixel agreement in %%")
    p.add_argument("--min-mask-miou", type=float, help="minimum mIoU of exported vs reference masks")
    p.add_argument("--max-miou-drop", type=float, help="largest allowed drop of the dataset mIoU from PyTorch to "
                   "the export, absolute (default 0.01 = one point)")
    p.add_argument("--limit", type=int, help="use only the first N test images")
    p.add_argument("--data", metavar="SPEC",
                   help="check on this dataset's test split instead of the run's (same classes), e.g. "
                   "folder:/data/field-photos?split=0,0,1; images are streamed, a broken one stops the check "
                   "(exit 1) with the figures of every image before it")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default="logits", choices=("logits", "argmax"), help="which export to check")
    p.add_argument("--input", dest="input_kind", default="image", choices=("image", "multiarray", "pixels"),
                   help="which export to check (coreml: multiarray; tflite: pixels)")
    p.add_argument("--compute-units", metavar="UNITS",
                   help="coreml on macOS: Core ML runtime compute units to check, comma-separated from CPU_ONLY, "
                   "CPU_AND_GPU, CPU_AND_NE, ALL (default CPU_ONLY,ALL; the check passes only if every one does). "
                   "Elsewhere Core ML is checked by reference execution of the saved program; asking for "
                   "compute units there is NOT VERIFIED (exit 3)")
    p.add_argument("--score-threshold", type=float, default=0.3,
                   help="Mask R-CNN runs: detections scoring below it are not compared (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print parity.json to stdout (a list for several exports)")

    p = sub.add_parser("report", help="size/latency/parity report of a run", epilog=EPILOG, formatter_class=fmt,
                       description="Time every export of RUN and join sizes, latency and parity into "
                       "RUN/report.json (schema edgeseg.report/1), RUN/report.md and RUN/report.html (plots and "
                       "mask overlays of PyTorch vs each export; instance masks for a Mask R-CNN run).")
    _common(p)
    p.add_argument("run", type=Path)
    p.add_argument("--runs", type=int, default=20, help="timed runs per model (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=Path, help="YAML of limits per export (max_size_mb, max_latency_ms, "
                   "min_agreement, max_miou_drop); exit 1 if one is exceeded, 3 if one could not be measured")
    p.add_argument("--max-miou-drop", type=float, help="budget limit for every export without its own: largest "
                   "dataset mIoU drop from PyTorch (default: the budget's, or none without --budget)")
    p.add_argument("--baseline", type=Path, help="an earlier report.json: diff table, exit 1 on a regression "
                   "(size +5 %%, latency +15 %%, agreement -0.5 points, dataset mIoU -0.01)")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")

    p = sub.add_parser("bench", help="size, I/O and latency of any model file", epilog=EPILOG, formatter_class=fmt,
                       description="Describe and time a .tflite (LiteRT, XNNPACK on and off), .onnx (onnxruntime), "
                       ".mlpackage (Core ML runtime, macOS only) or edgeseg checkpoint/run (PyTorch eager) at "
                       "several thread counts; hardware and runtime versions are recorded.")
    _common(p)
    p.add_argument("model", type=Path, help="model file, .mlpackage, checkpoint .pt or run directory")
    p.add_argument("--threads", default="1,2,4", help="comma-separated thread counts (default %(default)s)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the figures as JSON (schema edgeseg.bench/1)")

    p = sub.add_parser("quantize", help="int8 that keeps masks: NNCF PTQ, QAT, accuracy control, mixed precision",
                       epilog=EPILOG, formatter_class=fmt,
                       description="Quantize RUN's model with NNCF (ptq, qat, accuracy), ai-edge-quantizer (aeq, "
                       "TFLite) or PT2E + litert-torch (pt2e, TFLite) and export + check each target against the "
                       "full-precision model: RUN/export/<target>-int8-<method>/ (Core ML: coreml-w8a8-<method>), "
                       "with parity.json on the test split; a summary in RUN/export/quantize-<method>.json. ONNX and "
                       "OpenVINO convert NNCF's quantizers; TFLite and Core ML take the quantization-adapted "
                       "weights and calibrate their own int8. Exit 1 when an export misses the threshold.")
    _common(p)
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
                   "sensitive layers in float one at a time until it holds (ptq/qat: ranked by the converter "
                   "debugger's RMSE; aeq: ranked by the validation mask mIoU with each op alone in float, then also "
                   "walked from the input; written to tflite-int8-aeq-mixed; pt2e: after fine-tuning, activation "
                   "tensors left in float ranked by the validation mask mIoU of the fake-quant graph, written to "
                   "tflite-int8-pt2e-mixed)")
    p.add_argument("--max-float-layers", type=int, help="mixed precision: give up after this many (default 8; aeq: "
                   "40 per search order; pt2e: 40 tensors; exit 1 with the best mix reached)")
    p.add_argument("--max-float-macs", type=float, default=10.0, help="aeq/pt2e mixed precision: at most this %% of "
                   "the multiply-adds in float (default %(default)s)")
    p.add_argument("--ranges", default="minmax", help="aeq: activation ranges, minmax (default: the calibration's "
                   "moving-average min/max; measured best on CamVid val), mse, or percentile (the mean of each "
                   "image's 0.01/99.99th percentiles per tensor)")
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
    p.add_argument("--limit", type=int, help="check on the first N test images only")
    p.add_argument("--weights", choices=("auto", "ema", "raw"), default="auto")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("bundle", help="the folder Android and iOS builds consume", epilog=EPILOG, formatter_class=fmt,
                       description="Write RUN's checked exports as android/model.tflite (with TFLite metadata), "
                       "ios/<Name>.mlpackage, labels.txt, an app README with Kotlin and Swift code, and one "
                       "manifest.json (schema edgeseg.bundle/1) with sha256 of every file, parity and latency "
                       "evidence. Only exports whose parity check passed are taken. On a Mask R-CNN run: the "
                       "export graph's files, its output tensors and post-processing in the manifest, and "
                       "Kotlin/Swift that decode detections and paste masks as the check does. --verify DIR re-checks a "
                       "bundle against its manifest (exit 1 on any difference).")
    _common(p)
    p.add_argument("run", type=Path, nargs="?", help="run directory or checkpoint.pt")
    p.add_argument("-o", "--output", type=Path, default=Path("dist"), help="bundle folder (default %(default)s)")
    p.add_argument("--tflite", default="auto", metavar="EXPORT",
                   help="which TFLite export, e.g. int8-pixels (a folder of RUN/export without 'tflite-'); auto "
                   "(default): the smallest passing one, pixel input first; none: leave Android out")
    p.add_argument("--coreml", default="auto", metavar="EXPORT",
                   help="which Core ML export, e.g. fp16; auto (default) or none, as --tflite")
    p.add_argument("--name", help="model name in metadata and manifest (default: run folder + architecture); "
                   "the .mlpackage (and the Swift class Xcode generates) is named after it")
    p.add_argument("--version", default="1.0.0", help="model version (default %(default)s)")
    p.add_argument("--author", default="")
    p.add_argument("--license", default="")
    p.add_argument("--description", default="")
    p.add_argument("--allow-unchecked", action="store_true",
                   help="also take exports without a passing parity check (never failed ones)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty output folder")
    p.add_argument("--verify", type=Path, metavar="DIR",
                   help="verify an existing bundle (schema, sha256 of every file, no extra or unsafe paths)")
    p.add_argument("--json", action="store_true", help="print the manifest (or the verification) as JSON")

    p = sub.add_parser("import", help="a run directory for a model edgeseg did not train", epilog=EPILOG,
                       formatter_class=fmt,
                       description="Write RUN/checkpoint.pt for torchvision's segmentation models or any nn.Module "
                       "factory, TorchScript or ONNX file, so export, check, quantize, report and bundle work on it. MODEL: "
                       "torchvision:NAME[?weights=ENUM] (e.g. torchvision:lraspp_mobilenet_v3_large?weights="
                       "COCO_WITH_VOC_LABELS_V1; downloads when online), smp:ARCH?encoder=NAME (segmentation_models_"
                       "pytorch, with --weights), python:package.module:factory, torchscript:FILE or onnx:FILE (translated to "
                       "PyTorch by onnx2torch for the targets; check compares with the file in onnxruntime).")
    _common(p)
    p.add_argument("model", metavar="MODEL", help="torchvision:NAME[?weights=ENUM], smp:ARCH?encoder=NAME, "
                   "python:package.module:factory, torchscript:FILE or onnx:FILE")
    p.add_argument("-o", "--output", type=Path, required=True, help="run directory to create")
    p.add_argument("--data", required=True,
                   help="the images int8 calibration and check use: any dataset spec, or folder:IMAGES for images "
                   "without masks (check then measures parity only)")
    p.add_argument("--weights", type=Path, help="a local state_dict (.pth), loaded with weights_only=True")
    p.add_argument("--classes", type=Path, help="class names, one per line ('name' or 'name R G B')")
    p.add_argument("--num-classes", type=int, help="output classes when neither --classes nor the weights say")
    p.add_argument("--mean", help="normalization mean, R,G,B in 0-1 (default ImageNet's or the weights')")
    p.add_argument("--std", help="normalization std, R,G,B (default ImageNet's or the weights')")
    p.add_argument("--image-size", metavar="SIZE",
                   help="export input size: a side or HxW (default 256; an ONNX file's fixed size)")
    p.add_argument("--resize", choices=("letterbox", "stretch", "crop"), default="letterbox",
                   help="how frames of another size fit the input (default letterbox)")
    p.add_argument("--binary", action="store_true", help="the model has one sigmoid-logit channel (foreground > 0)")
    p.add_argument("--upsample", action="store_true",
                   help="add a bilinear upsampling to the input size for outputs smaller than the input")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="argument for a python: factory (repeatable; values parsed as JSON when they can be)")

    p = sub.add_parser("quickstart", help="the main job on the embedded data", epilog=EPILOG, formatter_class=fmt,
                       description="Train LR-ASPP MobileNetV3 on the embedded synthetic data, export TFLite "
                       "fp32/fp16/int8 (+ int8 with pixel input) and Core ML fp16/int8, check parity, write the "
                       "report and the app bundle (OUTPUT/dist).")
    _common(p)
    p.add_argument("-o", "--output", type=Path, default=Path("runs/quickstart"))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--fresh", action="store_true", help="delete an existing quickstart run first")

    p = sub.add_parser("maskrcnn", help="instance segmentation: train, export and check with instance parity",
                       formatter_class=fmt, description="Mask R-CNN (torchvision) from training to ONNX, TFLite "
                       "and Core ML through a static export graph (fixed proposals/detections, exact greedy NMS, "
                       "RoIAlign as gathers), checked detection by detection against the eager model.")
    msub = p.add_subparsers(dest="maskrcnn_command", metavar="ACTION")
    q = msub.add_parser("train", help="train Mask R-CNN; writes RUN/maskrcnn.pt and RUN/metrics.json",
                        epilog=EPILOG, formatter_class=fmt,
                        description="Train on a dataset with instance annotations (synthetic, coco:PATH); images "
                        "are letterboxed to --size x --size. Reports COCO box/mask AP on the test split.")
    _common(q)
    q.add_argument("-o", "--output", type=Path, required=True, help="run directory")
    q.add_argument("--data", default="synthetic", help="synthetic or coco:PATH (default: synthetic)")
    q.add_argument("--backbone", default="mobilenet_v3_large", choices=("mobilenet_v3_large", "resnet50"))
    q.add_argument("--size", type=int, default=64, help="square input side, a multiple of 32 (default 64)")
    q.add_argument("--epochs", type=int, default=6)
    q.add_argument("--batch-size", type=int, default=4)
    q.add_argument("--lr", type=float, default=0.01)
    q.add_argument("--limit", type=int, help="train on the first N images only")
    q.add_argument("--mask-layers", default="32,32",
                   help="mask head widths (default 32,32: CPU-sized; torchvision's is 256,256,256,256)")
    q.add_argument("--iou-balanced", type=float, metavar="ETA",
                   help="train the box classifier with the IoU-balanced loss (positives weighted by IoU^ETA; "
                        "the paper uses 1.5); default: torchvision's cross-entropy")
    q.add_argument("--backbone-from", type=Path, metavar="RUN",
                   help="initialize the mobilenet_v3_large backbone from a semantic edgeseg run with that encoder "
                        "(e.g. an LR-ASPP run on the same images); default: random init (offline)")
    q.add_argument("--json", action="store_true")
    q = msub.add_parser("export", help="export to onnx/tflite/coreml and check instance parity", epilog=EPILOG,
                        formatter_class=fmt,
                        description="Write RUN/export/maskrcnn-TARGET-PRECISION/ (model + export.json + parity.json). "
                        "Parity: exported detections matched to the eager model's by box IoU (same class); "
                        "matched mask IoU, box IoU, score difference, missed/extra detections, mask AP of both. "
                        "Exit 1 when a threshold fails (the figures are printed); exit 3 when the reference detects "
                        "nothing above --score-threshold (nothing compared is not a pass).")
    _common(q)
    q.add_argument("run", type=Path)
    q.add_argument("--target", required=True, choices=("onnx", "tflite", "coreml"))
    q.add_argument("--precision", help="onnx: fp32; tflite: fp32, fp16, int8, int8-weights, int8-mixed (int8 with the "
                   "layers that break instances in float, ranked by instance parity on the validation split); "
                   "coreml: fp16, fp32, int8, palettize6, palettize8 (compressed weights, fp16 compute)")
    q.add_argument("--max-float-macs", type=float, metavar="PCT",
                   help="int8-mixed: at most this %% of the multiply-adds in float (default 10)")
    q.add_argument("--pre-nms", type=int, default=200, help="RPN proposals per FPN level before NMS")
    q.add_argument("--proposals", type=int, default=100, help="proposals after the RPN's NMS")
    q.add_argument("--candidates", type=int, default=300, help="(box, class) pairs entering the detection NMS")
    q.add_argument("--detections", type=int, default=20, help="fixed number of output detections")
    q.add_argument("--nms-iterations", type=int, default=12, help="unrolled Cluster-NMS steps")
    _instance_check_args(q)
    q.add_argument("--json", action="store_true")
    q = msub.add_parser("check", help="check an existing export's instance parity again", epilog=EPILOG,
                        formatter_class=fmt,
                        description="Check RUN/export/maskrcnn-TARGET-PRECISION/ as it is on disk now (the export's "
                        "own graph counts) against the eager model on the test split; the new figures replace "
                        "the export's parity.json. Exit codes as for export.")
    _common(q)
    q.add_argument("run", type=Path)
    q.add_argument("--target", required=True, choices=("onnx", "tflite", "coreml"))
    q.add_argument("--precision", help="as exported (default: the target's first: onnx/tflite fp32, coreml fp16)")
    _instance_check_args(q)
    q.add_argument("--json", action="store_true")

    p = sub.add_parser("models", help="list architectures with params and MACs", formatter_class=fmt,
                       description="List every registered architecture (default options) with its parameter "
                       "count and multiply-accumulates at --size.")
    _common(p)
    p.add_argument("--size", default="128", help="input size for the MAC count: a side or HxW (e.g. 360x480)")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("data", help="inspect or check a dataset", formatter_class=fmt,
                       description="Inspect a dataset (show) or read every file of it and list every problem "
                       "(check).")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    q = dsub.add_parser("check", help="read every file; list every problem", epilog=EPILOG, formatter_class=fmt,
                        description="Read every sample of each split and report counts, the class pixel "
                        "histogram, image sizes and every broken file (unreadable or truncated image, label "
                        "size != image size, label values outside the class map, missing pair). Exit 1 if "
                        "anything is wrong.")
    _common(q)
    q.add_argument("path", help="dataset root, or a full spec such as voc:PATH")
    q.add_argument("--format", help="voc, coco, cityscapes, camvid, folder (omit when PATH is a spec)")
    q.add_argument("--categories", help="COCO category subset: all, voc or names")
    q.add_argument("--split", action="append", choices=("train", "val", "test"),
                   help="check only this split (repeatable; default all)")
    q.add_argument("--limit", type=int, help="check only the first N samples of each split")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q = dsub.add_parser("show", help="classes, sizes and class pixel fractions", formatter_class=fmt)
    _common(q)
    q.add_argument("spec", help="e.g. synthetic, folder:PATH?values=0,255, voc:PATH")
    q.add_argument("--image-size", default="128", help="size of generated (synthetic) images: a side or HxW")
    q.add_argument("--json", action="store_true")
    return ap


def _parse_opt(items: list[str], flag: str = "--model-opt") -> dict[str, Any]:
    from edgeseg.core.errors import UsageError

    out: dict[str, Any] = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise UsageError(f"{flag} '{it}' must look like KEY=VALUE")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def cmd_train(a: argparse.Namespace) -> int:
    from edgeseg.train.config import TrainConfig
    from edgeseg.core.errors import UsageError
    from edgeseg.train.loop import train

    if a.model == "maskrcnn":
        return _train_instance(a)
    cfg = TrainConfig.from_yaml(a.config) if a.config else TrainConfig()
    over = {"model": a.model, "data": a.data, "image_size": a.image_size, "resize": a.resize, "epochs": a.epochs,
            "batch_size": a.batch_size, "lr": a.lr, "schedule": a.schedule, "class_weights": a.class_weights,
            "loss": a.loss, "augment": a.augment, "num_workers": a.workers, "accumulate": a.accumulate,
            "clip_grad": a.clip_grad, "ema": a.ema, "export_weights": a.export_weights, "patience": a.patience,
            "checkpoint_every": a.checkpoint_every, "precise_bn_batches": a.precise_bn_batches, "compile": a.compile, "sync_bn": a.sync_bn,
            "seed": a.seed, "device": a.device}
    if a.amp is not None:
        over.update(amp=a.amp != "off", amp_dtype="auto" if a.amp == "off" else a.amp)
    over = {k: v for k, v in over.items() if v is not None}
    if a.categories:
        over["data"] = _data_spec(over.get("data", cfg.data), None, a.categories)
    if a.model_opt:
        over["model_kwargs"] = _parse_opt(a.model_opt)
    if a.model and a.model != cfg.model and not a.model_opt:
        over["model_kwargs"] = {}
    cfg = cfg.replace(**over)
    if a.nproc_per_node is not None and "WORLD_SIZE" not in os.environ:
        from edgeseg.train.distributed import launch, per_rank_batch

        if a.nproc_per_node < 1:
            raise UsageError(f"--nproc-per-node must be >= 1, got {a.nproc_per_node}")
        per_rank_batch(cfg.batch_size, a.nproc_per_node)  # refuse before starting any process
        argv = list(a.argv)
        i = next(k for k, v in enumerate(argv) if v.startswith("--nproc-per-node"))
        del argv[i: i + (1 if "=" in argv[i] else 2)]
        return launch(a.nproc_per_node, argv)
    train(cfg, a.output, resume=a.resume, quiet=a.quiet, init_from=a.init_from,
          log=(lambda s: None) if a.quiet else print, skip_bad=a.skip_bad)
    return EXIT_OK


def cmd_export(a: argparse.Namespace) -> int:
    from edgeseg.steps.export import export_pairs, export_runs

    if _is_instance_run(a.run):
        return _instance_command(a, "export")
    pairs, skipped = export_pairs(a.target, a.precision)
    log = _log(a)
    for note in skipped:
        log(f"note: {note}")
    t0 = time.time()
    recs = export_runs(a.run, pairs, a.calibration, log=log, weights=a.weights, output=a.output,
                       input_kind=a.input_kind, deployment_target=a.deployment_target)
    if len(recs) > 1:
        log(f"{len(recs)} exports in {time.time() - t0:.1f} s")
    if a.json:
        print(json.dumps(recs[0] if len(recs) == 1 else recs, indent=2))
    return EXIT_OK


def _print_parity(res) -> None:
    print(f"{res.target} {res.precision}: {res.status.upper()}" + (f" ({res.runtime})" if res.runtime else ""))
    if res.status == "not-verified":
        print(f"  not verified: {res.reason}")
        return
    for runtime, r in res.by_runtime.items():
        print(f"  {runtime}: {r['status'].upper()}, agreement {r['pixel_agreement'] or 0:.3f} %, "
              f"mask mIoU {r['mask_miou'] or 0:.4f}")
    print(f"  images              {res.images}")
    if res.reference != "PyTorch":
        print(f"  reference           {res.reference}")
    print(f"  pixel agreement     {res.pixel_agreement:.3f} %   (min {res.thresholds.get('min_agreement', '—')})")
    print(f"  mask mIoU vs ref    {res.mask_miou:.4f}     (min {res.thresholds.get('min_mask_miou', '—')})")
    print("  max |Δlogit|        " + ("— (the export outputs the class map)" if res.max_abs_logit_diff is None
                                      else f"{res.max_abs_logit_diff:.4g}"))
    drop = "" if res.miou_drop is None else (f"  drop {res.miou_drop:+.4f} (max "
                                             f"{res.thresholds.get('max_miou_drop', '—')})")
    where = "at each label's size" if res.task_resolution == "label" else "at the model's size"
    if res.reference_miou is None or res.reference_miou != res.reference_miou:  # nan: no labelled pixel
        print("  dataset mIoU        — (the images have no masks: task figures left out)")
        return
    print(f"  dataset mIoU        reference {res.reference_miou:.4f}  exported {res.exported_miou:.4f}{drop}  ({where})")
    if res.model_resolution_miou:
        mr = res.model_resolution_miou
        print(f"  at the model's size reference {mr['reference_miou']:.4f}  exported {mr['exported_miou']:.4f}")
    changes = ", ".join(f"{k} {v:+.4f}" for k, v in res.iou_change.items() if v is not None)
    print(f"  IoU change/class    {changes}")
    for f in res.failures:
        print(f"  FAILED: {f}")


def _status_code(results) -> int:
    if any(r.status == "failed" for r in results):
        return EXIT_FAILURE
    if any(r.status == "not-verified" for r in results):
        return EXIT_NOT_VERIFIED
    return EXIT_OK


def cmd_check(a: argparse.Namespace) -> int:
    from edgeseg.steps.export import check_runs, export_pairs

    if _is_instance_run(a.run):
        return _instance_command(a, "check")
    pairs, skipped = export_pairs(a.target, a.precision)
    log = _log(a) if not a.json else (lambda s: None)
    for note in skipped:
        log(f"note: {note}")
    results = check_runs(a.run, pairs, a.min_agreement, a.min_mask_miou, a.limit, a.threads,
                         max_miou_drop=a.max_miou_drop, log=log, compute_units=a.compute_units,
                         output=a.output, input_kind=a.input_kind, data=a.data)
    if a.json:
        out = [r.to_json() for r in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        for res in results:
            _print_parity(res)
    return _status_code(results)


def cmd_report(a: argparse.Namespace) -> int:
    from edgeseg.steps.report.build import build_report

    if _is_instance_run(a.run):
        from edgeseg.core.errors import UsageError
        from edgeseg.steps.report.instance import build_instance_report

        if a.budget or a.baseline or a.max_miou_drop is not None:
            raise UsageError("--budget, --baseline and --max-miou-drop apply to semantic runs; "
                             f"'{a.run}' is a Mask R-CNN run")
        rep = build_instance_report(a.run, a.runs, a.warmup, a.threads, log=_log(a) if not a.json else (lambda s: None))
        print(json.dumps(rep, indent=2) if a.json else (Path(a.run) / "report.md").read_text())
        return {"failed": EXIT_FAILURE, "not-verified": EXIT_NOT_VERIFIED}.get(rep["status"], EXIT_OK)
    rep = build_report(a.run, a.runs, a.warmup, a.threads, log=_log(a) if not a.json else (lambda s: None),
                       budget=a.budget, baseline=a.baseline, max_miou_drop=a.max_miou_drop)
    if a.json:
        print(json.dumps(rep, indent=2))
    else:
        print((Path(rep["run"]) / "report.md").read_text())
    return {"failed": EXIT_FAILURE, "not-verified": EXIT_NOT_VERIFIED}.get(rep["status"], EXIT_OK)


def cmd_quantize(a: argparse.Namespace) -> int:
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
        min_agreement=a.min_agreement, min_mask_miou=a.min_mask_miou, max_miou_drop=a.max_miou_drop, limit=a.limit,
        weights=None if a.weights == "auto" else a.weights)
    summary = quantize_run(a.run, opts, log=_log(a) if not a.json else (lambda s: None))
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


def cmd_bundle(a: argparse.Namespace) -> int:
    from edgeseg.steps.bundle.build import make_bundle, verify_bundle

    if a.verify is not None:
        if a.run is not None:
            raise UsageError("pass either RUN (to make a bundle) or --verify DIR, not both")
        problems = verify_bundle(a.verify)
        if a.json:
            print(json.dumps({"bundle": str(a.verify), "ok": not problems, "problems": problems}, indent=2))
        else:
            for p in problems:
                print(f"{a.verify}: {p}", file=sys.stderr)
            if not problems:
                print(f"{a.verify}: every file matches manifest.json")
        return EXIT_FAILURE if problems else EXIT_OK
    if a.run is None:
        raise UsageError("bundle needs RUN (a run directory) or --verify DIR")
    manifest = make_bundle(a.run, a.output, tflite=a.tflite, coreml=a.coreml, name=a.name, version=a.version,
                           author=a.author, license=a.license, description=a.description,
                           allow_unchecked=a.allow_unchecked, force=a.force,
                           log=_log(a) if not a.json else (lambda s: None))
    if a.json:
        print(json.dumps(manifest, indent=2))
    else:
        for plat, d in manifest["platforms"].items():
            par = d["parity"]
            figures = (f"{par['pixel_agreement']:.3f} % agreement, mask mIoU {par['mask_miou']:.4f}"
                       if par.get("pixel_agreement") is not None else
                       f"{par['matched']}/{par['reference_detections']} detections matched, mask IoU "
                       f"{par['mask_iou_mean']:.4f}" if par.get("mask_iou_mean") is not None
                       else f"parity {par['status']}")
            print(f"{plat:8s} {d['file']}  {d['size_bytes'] / 1e6:.2f} MB  {d['precision']}  {figures}")
        print(f"bundle: {a.output} ({len(manifest['files'])} files; edgeseg bundle --verify {a.output})")
    return EXIT_OK


def cmd_import(a: argparse.Namespace) -> int:
    from edgeseg.core.errors import UsageError
    from edgeseg.steps.importer import check_data_spec, import_model

    def triple(flag: str, v: str | None):
        if v is None:
            return None
        try:
            t = tuple(float(x) for x in v.split(","))
        except ValueError:
            t = ()
        if len(t) != 3:
            raise UsageError(f"{flag} takes three numbers R,G,B (0-1 scale), got '{v}'")
        return t

    import_model(a.output, a.model, data=check_data_spec(a.data), weights=a.weights, classes=a.classes,
                 num_classes=a.num_classes, mean=triple("--mean", a.mean), std=triple("--std", a.std),
                 image_size=a.image_size, resize=a.resize, binary=a.binary, upsample=a.upsample,
                 model_args=_parse_opt(a.model_arg, "--model-arg"), log=(lambda s: None) if a.quiet else print)
    return EXIT_OK


def cmd_quickstart(a: argparse.Namespace) -> int:
    from edgeseg.steps.quickstart import quickstart

    results = quickstart(a.output, epochs=a.epochs, fresh=a.fresh, quiet=a.quiet, log=print)
    for r in results:
        _print_parity(r)
    print(f"\nreport: {a.output / 'report.md'} (and report.json, report.html)")
    if (a.output / "dist" / "manifest.json").exists():
        print(f"app bundle: {a.output / 'dist'} (android/, ios/, manifest.json, README.md)")
    code = _status_code(results)
    # Core ML cannot run on Linux: quickstart says so in its output and report, and that alone does not
    # fail the main job; a parity failure does.
    return EXIT_FAILURE if code == EXIT_FAILURE else EXIT_OK


def cmd_maskrcnn(a: argparse.Namespace) -> int:
    if a.maskrcnn_command == "train":
        from edgeseg.tasks.instance.run import train_run

        layers = tuple(int(v) for v in a.mask_layers.split(",") if v.strip()) if a.mask_layers else ()
        rec = train_run(a.output, a.data, a.backbone, a.size, a.epochs, a.batch_size, a.lr, a.limit, layers,
                        iou_balanced=a.iou_balanced, backbone_from=a.backbone_from,
                        log=_log(a) if not a.json else (lambda s: None))
        if a.json:
            print(json.dumps(rec, indent=2))
        else:
            print(f"trained {rec['steps']} steps on {rec['train_images']} images in {rec['seconds']} s "
                  f"(skipped: {rec['skipped']}); loss {rec['first_loss']:.3f} -> {rec['last_loss']:.3f}; "
                  f"test mask AP {rec['ap']['mask']['AP']:.4f}, box AP {rec['ap']['box']['AP']:.4f}")
        return EXIT_OK
    if a.maskrcnn_command in ("export", "check"):
        from edgeseg.tasks.instance.check import GraphCounts
        from edgeseg.tasks.instance import run as instance_run

        overrides = {"min_mask_iou": a.min_mask_iou, "min_box_iou": a.min_box_iou, "max_unmatched": a.max_unmatched,
                     "max_ap_drop": a.max_ap_drop}
        log = _log(a) if not a.json else (lambda s: None)
        if a.maskrcnn_command == "export":
            counts = GraphCounts(a.pre_nms, a.proposals, a.candidates, a.detections, a.nms_iterations)
            if a.max_float_macs is not None and a.precision != "int8-mixed":
                raise UsageError("--max-float-macs applies to --precision int8-mixed (the mixed-precision search)")
            if a.max_float_macs is not None and not 0 <= a.max_float_macs <= 100:
                raise UsageError(f"--max-float-macs takes a percentage from 0 to 100, not {a.max_float_macs:g}")
            rec = instance_run.export_run(a.run, a.target, a.precision, counts, a.limit, a.score_threshold,
                                          overrides, log=log, max_float_macs=a.max_float_macs)
        else:
            rec = instance_run.check_run(a.run, a.target, a.precision, a.limit, a.score_threshold, overrides, log=log)
        if a.json:
            print(json.dumps(rec, indent=2, default=str))
        else:
            _print_instance(rec, a.maskrcnn_command == "export")
        return _instance_code(rec)
    raise UsageError("edgeseg maskrcnn needs an action: train, export or check (see edgeseg maskrcnn --help)")


def _print_instance(rec: dict, exported: bool) -> None:
    p = rec["parity"]
    if exported:
        print(f"{rec['path']}: {rec['size_bytes'] / 1e6:.2f} MB in {rec['export_seconds']} s")
    search = (rec.get("details") or {}).get("search")
    if exported and search:
        v = search["validation"]
        print(f"mix: {len(v['float_ops'])} of {search['candidates']} convolution/fully-connected ops in float "
              f"({v['float_macs_pct']} % of MACs; budget {search['max_float_macs']:g} %), "
              f"{'passed' if search['passed'] else 'no mix passed'} on the validation split after "
              f"{search['trials']} tries ({search['seconds']} s)")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"{rec['target']} {rec['precision']} parity {p['status'].upper()} ({p['runtime']}, {p['images']} images): "
          f"{p['matched']} matched, {p['missed']} missed, {p['extra']} extra of {p['reference_detections']}; "
          f"mask IoU {fmt(p['mask_iou_mean'])} (min {fmt(p['mask_iou_min'])}), box IoU "
          f"{fmt(p['box_iou_mean'])}, max score diff {fmt(p['max_score_diff'])}; mask AP "
          f"{fmt(p['exported_ap'].get('mask'))} vs reference {fmt(p['reference_ap'].get('mask'))}")
    for f in p["failures"]:
        print(f"  FAILED: {f}")
    if p["reason"]:
        print(f"  {p['reason']}")


def _instance_code(rec: dict) -> int:
    return {"passed": EXIT_OK, "not-verified": EXIT_NOT_VERIFIED}.get(rec["parity"]["status"], EXIT_FAILURE)


def _is_instance_run(run: Path) -> bool:
    """A Mask R-CNN run directory (``RUN/maskrcnn.pt``, written by ``train --model maskrcnn``)."""
    from edgeseg.tasks.instance.run import CHECKPOINT
    from edgeseg.train.checkpoint import CHECKPOINT_NAME

    run = Path(run)
    return run.is_dir() and (run / CHECKPOINT).is_file() and not (run / CHECKPOINT_NAME).is_file()


# export/check options of semantic runs, and their defaults: on a Mask R-CNN run a changed one is refused
_SEMANTIC_ONLY = {"calibration": 100, "weights": "auto", "output": "logits", "input_kind": "image",
                  "deployment_target": None, "min_agreement": None, "min_mask_miou": None, "max_miou_drop": None,
                  "data": None, "compute_units": None}


def _instance_command(a: argparse.Namespace, action: str) -> int:
    """``export``/``check`` on a Mask R-CNN run: every (target, precision) pair through the instance exporter
    (static graph, instance parity) with its default graph counts and thresholds (``edgeseg maskrcnn export``
    sets those)."""
    from edgeseg.core.errors import UsageError
    from edgeseg.tasks.instance import run as instance_run
    from edgeseg.tasks.instance.check import PRECISIONS
    from edgeseg.steps.export import export_pairs

    for k, default in _SEMANTIC_ONLY.items():
        if hasattr(a, k) and getattr(a, k) != default:
            flag = "--" + {"input_kind": "input"}.get(k, k).replace("_", "-")
            raise UsageError(f"{flag} applies to semantic runs; '{a.run}' is a Mask R-CNN run (graph counts and "
                             f"instance thresholds: edgeseg maskrcnn {action} --help)")
    pairs, skipped = export_pairs(a.target, a.precision, {n: (p, p[0]) for n, p in PRECISIONS.items()})
    log = _log(a) if not a.json else (lambda s: None)
    for note in skipped:
        log(f"note: {note}")
    limit = getattr(a, "limit", None) or 8
    recs = []
    for target, precision in pairs:
        if action == "export":
            rec = instance_run.export_run(a.run, target, precision, limit=limit, score_threshold=a.score_threshold,
                                          log=log)
        else:
            rec = instance_run.check_run(a.run, target, precision, limit=limit, score_threshold=a.score_threshold,
                                         log=log)
        recs.append(rec)
        if not a.json:
            _print_instance(rec, action == "export")
    if a.json:
        print(json.dumps(recs[0] if len(recs) == 1 else recs, indent=2, default=str))
    codes = [_instance_code(r) for r in recs]
    return EXIT_FAILURE if EXIT_FAILURE in codes else max(codes)


def _train_instance(a: argparse.Namespace) -> int:
    """``train --model maskrcnn``: the instance trainer (``edgeseg maskrcnn train``) with the common flags."""
    from edgeseg.core.image_size import parse_image_size
    from edgeseg.core.errors import UsageError
    from edgeseg.tasks.instance.run import train_run

    if a.config:
        raise UsageError("--config describes semantic runs; for Mask R-CNN give the flags (edgeseg train --model "
                         "maskrcnn --data ... --image-size ... --epochs ...)")
    opts = _parse_opt(a.model_opt) if a.model_opt else {}
    unknown = set(opts) - {"backbone"}
    if unknown:
        raise UsageError(f"--model-opt {', '.join(sorted(unknown))}: Mask R-CNN takes backbone=mobilenet_v3_large|"
                         f"resnet50 (more in: edgeseg maskrcnn train --help)")
    size = 64
    if a.image_size is not None:
        h, w = parse_image_size(a.image_size)
        if h != w:
            raise UsageError(f"--image-size {a.image_size}: the Mask R-CNN export graph is square; give one side")
        size = h
    kw = {k: v for k, v in (("epochs", a.epochs), ("batch_size", a.batch_size), ("lr", a.lr)) if v is not None}
    rec = train_run(a.output, a.data or "synthetic", str(opts.get("backbone", "mobilenet_v3_large")), size,
                    seed=a.seed if a.seed is not None else 0, log=_log(a), **kw)
    print(f"trained {rec['steps']} steps on {rec['train_images']} images in {rec['seconds']} s "
          f"(skipped: {rec['skipped']}); loss {rec['first_loss']:.3f} -> {rec['last_loss']:.3f}; "
          f"test mask AP {rec['ap']['mask']['AP']:.4f}, box AP {rec['ap']['box']['AP']:.4f}")
    return EXIT_OK


def _maskrcnn_row(classes: int, h: int, w: int) -> dict[str, Any]:
    """Mask R-CNN (MobileNetV3-Large FPN) as ``train --model maskrcnn`` builds it: MACs of its export graph
    (fixed counts: 100 proposals, 20 detections) at a square side (the longer of ``h``, ``w``, rounded up to 32)."""
    import torch

    from edgeseg.tasks.instance.model import build_maskrcnn
    from edgeseg.tasks.instance.static_graph import build_static
    from edgeseg.models import count_params
    from edgeseg.models.macs import count_macs

    side = -(-max(h, w) // 32) * 32
    model = build_maskrcnn(classes + 1, min_size=side, max_size=side).eval()
    with torch.no_grad():
        macs = count_macs(build_static(model, side), torch.zeros(1, 3, side, side))
    return {"name": "maskrcnn", "params": count_params(model), "macs": macs, "size": [side, side], "task": "instance",
            "doc": f"Mask R-CNN, MobileNetV3-Large FPN (instance segmentation; square input, {classes} classes + "
                   f"background; train --model maskrcnn)"}


def cmd_models(a: argparse.Namespace) -> int:
    import torch

    from edgeseg.core.image_size import parse_image_size
    from edgeseg.models import MODELS, build_model, count_params
    from edgeseg.models.macs import count_macs

    h, w = parse_image_size(a.size, "--size")
    rows = []
    for name in MODELS:
        m = build_model(name, a.classes).eval()
        rows.append({"name": name, "params": count_params(m), "task": "semantic",
                     "macs": count_macs(m, torch.zeros(1, 3, h, w)), "size": [h, w],
                     "doc": (MODELS.get(name).__doc__ or "").strip().splitlines()[0]})
    rows.append(_maskrcnn_row(a.classes, h, w))
    from edgeseg.models.encoders import ENCODERS

    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:14s} {r['params'] / 1e6:6.2f} M params  {r['macs'] / 1e9:7.3f} GMACs "
                  f"@{h}x{w}  {r['doc']}")
        print(f"\nencoders (encoder=...): {', '.join(ENCODERS)}; output_stride 8, 16 or 32 where the "
              f"architecture allows it.\nOptions: edgeseg train --model NAME --model-opt encoder=resnet18 "
              f"--model-opt output_stride=8")
    return EXIT_OK


def _data_spec(spec: str, fmt: str | None, categories: str | None) -> str:
    from edgeseg.data import DATASETS, with_option
    from edgeseg.core.errors import UsageError

    if fmt:
        if fmt not in DATASETS.names():
            DATASETS.get(fmt)  # raises with a suggestion
        if ":" in spec.split("/")[0] and spec.split(":")[0] in DATASETS.names():
            raise UsageError(f"--format {fmt} given but '{spec}' is already a spec; give one or the other")
        spec = f"{fmt}:{spec}"
    if categories:
        spec = with_option(spec, "categories", categories)
    return spec


def cmd_data(a: argparse.Namespace) -> int:
    from edgeseg.core.errors import UsageError

    if a.data_command == "check":
        return cmd_data_check(a)
    if a.data_command != "show":
        raise UsageError("edgeseg data needs an action: check or show (see edgeseg data --help)")
    from edgeseg.data import open_split
    from edgeseg.data.transforms import class_frequencies

    info: dict[str, Any] = {"spec": a.spec, "splits": {}}
    for split in ("train", "val", "test"):
        ds = open_split(a.spec, split, a.image_size)
        info["classes"] = [c.to_json() for c in ds.classes]
        freq = class_frequencies(ds, len(ds.classes))
        info["splits"][split] = {"images": len(ds),
                                 "pixel_fraction": [round(float(f), 5) for f in freq / max(freq.sum(), 1)]}
    if a.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{a.spec}: classes {', '.join(c['name'] for c in info['classes'])}")
        for s, d in info["splits"].items():
            print(f"  {s:5s} {d['images']:5d} images  pixel fraction per class {d['pixel_fraction']}")
    return EXIT_OK


def cmd_data_check(a: argparse.Namespace) -> int:
    from edgeseg.data.check import SPLITS, check_dataset, format_report
    from edgeseg.core.progress import progress_bar

    spec = _data_spec(a.path, a.format, a.categories)
    splits = tuple(a.split) if a.split else SPLITS

    def progress(split: str, i: int, n: int) -> None:
        if i == 0:
            bar.reset(n, f"check {split}")
        bar.advance()

    with progress_bar(None, "check", disable=a.quiet or a.json) as bar:
        report = check_dataset(spec, splits, a.limit, progress=progress)
    print(json.dumps(report, indent=2) if a.json else format_report(report))
    return EXIT_OK if report["ok"] else EXIT_FAILURE


def cmd_bench(a: argparse.Namespace) -> int:
    from edgeseg.core.errors import UsageError
    from edgeseg.steps.bench import bench_model, format_bench

    try:
        threads = tuple(int(t) for t in a.threads.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--threads takes comma-separated integers, got '{a.threads}'") from None
    r = bench_model(a.model, threads, a.runs, a.warmup, log=_log(a) if not a.json else (lambda s: None))
    print(json.dumps(r, indent=2) if a.json else format_bench(r))
    return EXIT_OK


def _log(a: argparse.Namespace):
    return (lambda s: None) if a.quiet else (lambda s: print(s, file=sys.stderr))


# commands that write into a run directory, and the argument naming it
_WRITES_RUN = {"train": "output", "export": "run", "check": "run", "quantize": "run", "report": "run",
               "bundle": "run", "maskrcnn": "output"}


def _lock(a: argparse.Namespace):
    from contextlib import nullcontext

    from edgeseg.core.lock import run_dir_of, run_lock

    attr = _WRITES_RUN.get(a.command)
    target = getattr(a, attr, None) if attr else None
    if a.command == "maskrcnn" and target is None:  # maskrcnn export/check name the run positionally
        target = getattr(a, "run", None)
    if target is None or "RANK" in os.environ:  # torchrun's workers run under their launcher's lock
        return nullcontext()
    run = run_dir_of(target)
    creates = a.command == "train" or getattr(a, "maskrcnn_command", None) == "train"
    if not creates and not run.is_dir():
        return nullcontext()  # the command itself reports the missing run
    return run_lock(run, a.command)


COMMANDS = {"train": cmd_train, "export": cmd_export, "check": cmd_check, "report": cmd_report, "bench": cmd_bench,
            "quantize": cmd_quantize, "bundle": cmd_bundle, "quickstart": cmd_quickstart, "models": cmd_models,
            "data": cmd_data, "maskrcnn": cmd_maskrcnn, "import": cmd_import}


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    a = ap.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    if not a.command:
        ap.print_help()
        return EXIT_USAGE
    if a.debug:
        os.environ["EDGESEG_DEBUG"] = "1"
    else:
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _lock(a):
            return COMMANDS[a.command](a)
    except EdgesegError as e:
        if a.debug:
            raise
        print(f"edgeseg {a.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgeseg: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        import errno

        if a.debug or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            if a.debug:
                raise
            print(f"edgeseg {a.command}: error: {e.strerror or e} ({e.filename or 'writing output'})",
                  file=sys.stderr)
            return EXIT_FAILURE
        where = e.filename or getattr(a, "output", None) or getattr(a, "run", None) or "the output"
        print(f"edgeseg {a.command}: error: out of disk space (or over the file size limit) while writing "
              f"'{where}': {e.strerror}. Earlier artifacts are intact (every file is written to a temporary "
              f"name first); free some space and run the command again", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as e:  # noqa: BLE001 - unexpected: one line, the traceback under --debug
        if a.debug:
            raise
        from exporters import ExporterError

        if isinstance(e, ExporterError):
            print(f"edgeseg {a.command}: error: {e}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"edgeseg {a.command}: internal error: {type(e).__name__}: {e} (run with --debug for the "
              f"traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
