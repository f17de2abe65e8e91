"""The main job on the embedded default: train, export TFLite + Core ML, check parity, report, bundle."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from edgeseg.core.atomic import ensure_dir
from edgeseg.steps.bundle.build import make_bundle
from edgeseg.train.config import TrainConfig
from edgeseg.tasks.semantic.parity import ParityResult
from edgeseg.steps.export import export
from edgeseg.tasks.semantic.run import check_run
from edgeseg.steps.report.build import build_report
from edgeseg.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from edgeseg.train.loop import train

# (target, precision, input kind); the pixel-input int8 TFLite (camera bytes in) is the one an Android app takes
EXPORTS = (("tflite", "fp32", "image"), ("tflite", "fp16", "image"), ("tflite", "int8", "image"),
           ("tflite", "int8", "pixels"), ("coreml", "fp16", "image"), ("coreml", "int8", "image"))
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
    for target, precision, input_kind in EXPORTS:
        export(out, target, precision, log=log, input_kind=input_kind)  # int8: the ladder, as export does
        results.append(check_run(out, target, precision, log=log, input_kind=input_kind))
    build_report(out, log=log)
    if all(r.passed for r in results if r.status != "not-verified"):
        # the folder an app build takes: the checked pixel-input int8 TFLite and the smallest checked Core ML
        make_bundle(out, out / "dist", tflite="int8-pixels", coreml="auto", name="Quickstart segmenter",
                    force=True, log=log)
    return results
