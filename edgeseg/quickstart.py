"""The main job on the embedded default: train, export TFLite + Core ML, check parity, report."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from edgeseg.atomic import ensure_dir
from edgeseg.config import TrainConfig
from edgeseg.parity import ParityResult
from edgeseg.pipeline import check_run, export_run
from edgeseg.report import build_report
from edgeseg.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from edgeseg.train.loop import train

EXPORTS = (("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"), ("coreml", "fp16"), ("coreml", "int8"))
QUICKSTART_CONFIG = TrainConfig(model="lraspp", data="synthetic", image_size=128, batch_size=8,
                                lr=3e-3, seed=0)


def quickstart(out: Path, epochs: int = 12, fresh: bool = False, quiet: bool = False,
               log: Callable[[str], None] = print) -> list[ParityResult]:
    """Run every step into ``out``; a finished training run there is reused (``fresh`` deletes it)."""
    out = Path(out)
    if fresh and out.is_dir():
        shutil.rmtree(out)
    ensure_dir(out, "quickstart directory")
    cfg = QUICKSTART_CONFIG.replace(epochs=epochs)
    ckpt_path = out / CHECKPOINT_NAME
    previous = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if previous is not None and previous.state.get("finished") and previous.config == cfg:
        log(f"reusing the trained model in {out} (pass --fresh to retrain)")
    else:
        train(cfg, out, resume=ckpt_path.exists(), quiet=quiet, log=log)
    results = []
    for target, precision in EXPORTS:
        export_run(out, target, precision, log=log)
        results.append(check_run(out, target, precision, log=log))
    build_report(out, log=log)
    return results
