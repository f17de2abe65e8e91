"""``edgeseg train``: a semantic run (the training loop) or, with ``--model maskrcnn``, an instance run."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edgeseg.cli.common import EPILOG, common, log_of, parse_opt
from edgeseg.core.errors import EXIT_OK

def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("train", help="train a model; writes RUN/checkpoint.pt", epilog=EPILOG, formatter_class=fmt,
                       description="Train a registered architecture on a dataset (CUDA when available, "
                       "else CPU). Writes a self-describing checkpoint every epoch; --resume continues it.")
    common(p)
    p.add_argument("-o", "--output", type=Path, default=Path("runs/train"), help="run directory (default: %(default)s)")
    p.add_argument("--config", type=Path, help="YAML file of TrainConfig keys; flags override it")
    p.add_argument("--model", help="architecture (see 'edgeseg models'; default lraspp; maskrcnn trains instance "
                   "segmentation, like 'edgeseg maskrcnn train')")
    p.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture option, e.g. base=16 (repeatable)")
    p.add_argument("--data", help="dataset spec FORMAT[:PATH][?opt=v&..]: synthetic (default), "
                   "folder:PATH?values=0,255, voc:VOCdevkit/VOC2012?aug=true, coco:PATH, "
                   "cityscapes:PATH?mode=fine, camvid:PATH?classes=11 (docs/data.md)")
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


def run(a: argparse.Namespace) -> int:
    from edgeseg.data import with_option
    from edgeseg.train.config import TrainConfig

    if a.model == "maskrcnn":
        from edgeseg.steps.train import SEMANTIC_ONLY, train_instance
        from edgeseg.tasks.instance.text import describe_training

        given = [k for k in SEMANTIC_ONLY if getattr(a, k) not in (None, False)
                 and not (k == "nproc_per_node" and getattr(a, k) == 1)]
        data = with_option(a.data or "synthetic", "categories", a.categories) if a.categories else a.data
        rec = train_instance(a.output, data, parse_opt(a.model_opt) if a.model_opt else {}, a.image_size,
                             a.epochs, a.batch_size, a.lr, a.seed, a.config, log_of(a), given=given,
                             resume=a.resume, checkpoint_every=a.checkpoint_every, patience=a.patience,
                             device=a.device, quiet=a.quiet)
        print(describe_training(rec))
        return EXIT_OK
    from edgeseg.train.loop import train

    cfg = TrainConfig.from_yaml(a.config) if a.config else TrainConfig()
    over = {"model": a.model, "data": a.data, "image_size": a.image_size, "resize": a.resize, "epochs": a.epochs,
            "batch_size": a.batch_size, "lr": a.lr, "schedule": a.schedule, "class_weights": a.class_weights,
            "loss": a.loss, "augment": a.augment, "num_workers": a.workers, "accumulate": a.accumulate,
            "clip_grad": a.clip_grad, "ema": a.ema, "export_weights": a.export_weights, "patience": a.patience,
            "checkpoint_every": a.checkpoint_every, "precise_bn_batches": a.precise_bn_batches,
            "compile": a.compile, "sync_bn": a.sync_bn, "seed": a.seed, "device": a.device}
    if a.amp is not None:
        over.update(amp=a.amp != "off", amp_dtype="auto" if a.amp == "off" else a.amp)
    over = {k: v for k, v in over.items() if v is not None}
    if a.categories:
        over["data"] = with_option(over.get("data", cfg.data), "categories", a.categories)
    if a.model_opt:
        over["model_kwargs"] = parse_opt(a.model_opt)
    if a.model and a.model != cfg.model and not a.model_opt:
        over["model_kwargs"] = {}
    cfg = cfg.replace(**over)
    if a.nproc_per_node is not None and "WORLD_SIZE" not in os.environ:
        from edgeseg.train.distributed import relaunch

        return relaunch(a.nproc_per_node, a.argv, cfg.batch_size)
    train(cfg, a.output, resume=a.resume, quiet=a.quiet, init_from=a.init_from,
          log=(lambda s: None) if a.quiet else print, skip_bad=a.skip_bad)
    return EXIT_OK
