"""``edgeseg maskrcnn train|export|check``: the instance commands with the static graph's counts and instance thresholds
(``edgeseg train --model maskrcnn``, ``export`` and ``check`` take a Mask R-CNN run too, with the defaults)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgeseg.cli.common import EPILOG, common, exit_code, fraction, log_of
from edgeseg.core.errors import EXIT_OK, UsageError

def instance_check_args(q: argparse.ArgumentParser) -> None:
    """The parity options shared by ``maskrcnn export`` and ``maskrcnn check``."""
    q.add_argument("--limit", type=int, default=8, help="test images for the parity check")
    q.add_argument("--score-threshold", type=fraction("--score-threshold"), default=0.3,
                   help="detections scoring below this on both sides are not counted (default 0.3)")
    q.add_argument("--min-mask-iou", type=fraction("--min-mask-iou"),
                   help="minimum mean matched mask IoU (fp32 0.97, fp16 0.95, int8 0.85)")
    q.add_argument("--min-box-iou", type=fraction("--min-box-iou"),
                   help="minimum mean matched box IoU (defaults as --min-mask-iou)")
    q.add_argument("--max-unmatched", type=fraction("--max-unmatched"),
                   help="maximum (missed + extra) / reference detections (fp32 0.02, fp16 0.05, int8 0.10)")
    q.add_argument("--max-ap-drop", type=fraction("--max-ap-drop"),
                   help="maximum mask-AP drop (fp32 0.01, fp16 0.02, int8 0.05)")


def training_loop_args(q: argparse.ArgumentParser) -> None:
    """The shared epoch loop's options that Mask R-CNN honours (``maskrcnn train`` and ``train --model maskrcnn``
    have them from the same parser code)."""
    q.add_argument("--resume", action="store_true", help="continue the run in -o from its last checkpoint")
    q.add_argument("--checkpoint-every", type=int, help="also checkpoint every N optimizer steps (default: epoch "
                   "ends only)")
    q.add_argument("--patience", type=int, help="stop after this many epochs without a better val mask AP")
    q.add_argument("--device", help="auto (default), cpu or cuda[:N]")


def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("maskrcnn", help="instance segmentation: train, export and check with instance parity",
                       formatter_class=fmt, description="Mask R-CNN (torchvision) from training to ONNX, TFLite "
                       "and Core ML through a static export graph (fixed proposals/detections, exact greedy NMS, "
                       "RoIAlign as gathers), checked detection by detection against the eager model.")
    msub = p.add_subparsers(dest="maskrcnn_command", metavar="ACTION")
    q = msub.add_parser("train", help="train Mask R-CNN; writes RUN/maskrcnn.pt and RUN/metrics.json",
                        epilog=EPILOG, formatter_class=fmt,
                        description="Train on a dataset with instance annotations (synthetic, coco:PATH); images "
                        "are letterboxed to --size x --size. Reports COCO box/mask AP on the test split.")
    common(q)
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
    training_loop_args(q)
    q.add_argument("--json", action="store_true")
    q = msub.add_parser("export", help="export to onnx/tflite/coreml and check instance parity", epilog=EPILOG,
                        formatter_class=fmt,
                        description="Write RUN/export/maskrcnn-TARGET-PRECISION/ (model + export.json + parity.json). "
                        "Parity: exported detections matched to the eager model's by box IoU (same class); "
                        "matched mask IoU, box IoU, score difference, missed/extra detections, mask AP of both. "
                        "Exit 1 when a threshold fails (the figures are printed); exit 3 when the reference detects "
                        "nothing above --score-threshold (nothing compared is not a pass).")
    common(q)
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
    instance_check_args(q)
    q.add_argument("--json", action="store_true")
    q = msub.add_parser("check", help="check an existing export's instance parity again", epilog=EPILOG,
                        formatter_class=fmt,
                        description="Check RUN/export/maskrcnn-TARGET-PRECISION/ as it is on disk now (the export's "
                        "own graph counts) against the eager model on the test split; the new figures replace "
                        "the export's parity.json. Exit codes as for export.")
    common(q)
    q.add_argument("run", type=Path)
    q.add_argument("--target", required=True, choices=("onnx", "tflite", "coreml"))
    q.add_argument("--precision", help="as exported (default: the target's first: onnx/tflite fp32, coreml fp16)")
    instance_check_args(q)
    q.add_argument("--json", action="store_true")


def run(a: argparse.Namespace) -> int:
    if a.maskrcnn_command == "train":
        from edgeseg.tasks.instance.run import train_run
        from edgeseg.tasks.instance.text import describe_training

        layers = tuple(int(v) for v in a.mask_layers.split(",") if v.strip()) if a.mask_layers else ()
        rec = train_run(a.output, a.data, a.backbone, a.size, a.epochs, a.batch_size, a.lr, a.limit, layers,
                        iou_balanced=a.iou_balanced, backbone_from=a.backbone_from, log=log_of(a), resume=a.resume,
                        checkpoint_every=a.checkpoint_every, patience=a.patience, device=a.device or "auto",
                        quiet=a.quiet)
        if a.json:
            print(json.dumps(rec, indent=2))
        else:
            print(describe_training(rec))
        return EXIT_OK
    if a.maskrcnn_command in ("export", "check"):
        from edgeseg.tasks import TASKS
        from edgeseg.tasks.instance.check import GraphCounts

        task = TASKS["instance"]
        kw = {"thresholds": {"min_mask_iou": a.min_mask_iou, "min_box_iou": a.min_box_iou,
                             "max_unmatched": a.max_unmatched, "max_ap_drop": a.max_ap_drop},
              "limit": a.limit, "score_threshold": a.score_threshold}
        if a.maskrcnn_command == "export":
            kw.update(counts=GraphCounts(a.pre_nms, a.proposals, a.candidates, a.detections, a.nms_iterations),
                      max_float_macs=a.max_float_macs)
        act = task.export if a.maskrcnn_command == "export" else task.check
        rec = act(a.run, [(a.target, a.precision)], log=log_of(a), **kw)[0]
        print(json.dumps(rec, indent=2, default=str) if a.json else task.describe(rec, a.maskrcnn_command == "export"))
        return exit_code([task.status(rec)])
    raise UsageError("edgeseg maskrcnn needs an action: train, export or check (see edgeseg maskrcnn --help)")
