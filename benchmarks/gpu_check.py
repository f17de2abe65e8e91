"""The GPU paths, end to end, on a CUDA machine: what CPU CI cannot run.

    python benchmarks/gpu_check.py [-o DIR] [--epochs 10] [--json]

Every step runs ``edgeseg`` as a user would (its own process, the real CLI) on the embedded synthetic scenes at
128 px, 512 training images, batch 16 (32 optimizer steps per epoch, 320 steps in 10 epochs):

1. LR-ASPP and U-Net, each trained twice: AMP bf16 and AMP fp16 with the grad scaler (``--amp``), channels_last
   (always on CUDA), ``--compile`` on one run of each model. Checks: the run used that dtype, its loss fell, its
   val mIoU beats chance by far (> 0.5), the fp16 run kept a finite grad-scaler scale.
2. ``--nproc-per-node 1``: the run goes through torchrun with an NCCL process group and DDP.
3. Kill -9 in the middle of a run (after a step checkpoint), ``--resume``: finishes with the same step count and
   a val mIoU within 0.05 of an uninterrupted run. (Not bit-exact: cuDNN and atomics are not deterministic.)
4. Export the bf16 LR-ASPP run to TFLite fp32 and Core ML fp16 and check parity (the default gates).

Prints images/s, peak GPU memory and each check's figures; with -o, keeps the runs and DIR/gpu_check.json. Exit 0 when every check
passed, 1 when any failed, 2 on a machine without CUDA (nothing is run). Budget: under 5 minutes on one
data-centre GPU; ``--epochs`` trades steps for time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = "synthetic?train=512&val=32&test=16"
COMMON = ["--data", DATA, "--image-size", "128", "--batch-size", "16", "--seed", "0", "--workers", "2", "-q",
          "--precise-bn-batches", "8"]
MODELS = {"lraspp": [], "unet": ["--model-opt", "base=16", "--model-opt", "depth=3"]}


def edgeseg(*args: str, wait: bool = True):
    cmd = [sys.executable, "-m", "edgeseg", *map(str, args)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return p.returncode, p.stdout, p.stderr, time.time() - t0


class Checks:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, name: str, ok: bool, **figures) -> bool:
        self.rows.append({"check": name, "passed": bool(ok), **figures})
        shown = ", ".join(f"{k} {v}" for k, v in figures.items())
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {shown}", flush=True)
        return ok

    @property
    def failed(self) -> list[str]:
        return [r["check"] for r in self.rows if not r["passed"]]


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _train(checks: Checks, out: Path, model: str, amp: str, compile_: bool, epochs: int) -> Path | None:
    run = out / f"{model}-{amp}{'-compile' if compile_ else ''}"
    name = f"train {model} --amp {amp}" + (" --compile" if compile_ else "")
    code, _, err, secs = edgeseg("train", "--model", model, *MODELS[model], *COMMON, "--epochs", epochs,
                                 "--amp", amp, *(["--compile"] if compile_ else []), "-o", run)
    if code != 0:
        checks.add(name, False, exit=code, error=err.strip()[-800:])
        return None
    m = _metrics(run)
    hist = m["history"]
    figures = {"images/s": m["train_images_per_second"], "peak_gpu_MB": m["peak_gpu_memory_mb"],
               "amp": m["amp"], "loss": f"{hist[0]['loss']:.3f} -> {hist[-1]['loss']:.3f}",
               "val_mIoU": round(m["val"]["miou"], 4), "seconds": round(secs, 1)}
    ok = m["amp"] == amp and m["device"].startswith("cuda") and hist[-1]["loss"] < hist[0]["loss"] \
        and m["val"]["miou"] > 0.5
    if amp == "fp16":
        from edgeseg.train.checkpoint import load_checkpoint

        state = load_checkpoint(run).state
        scale = float(state["scaler"]["scale"]) if state.get("scaler") else float("nan")
        figures["grad_scale"] = scale
        ok = ok and 0 < scale < float("inf")
    checks.add(name, ok, **figures)
    return run


def _torchrun(checks: Checks, out: Path) -> None:
    run = out / "torchrun-1"
    code, _, err, secs = edgeseg("train", "--model", "lraspp", *COMMON, "--epochs", 2, "--nproc-per-node", 1,
                                 "-o", run)
    if code != 0:
        checks.add("train --nproc-per-node 1 (torchrun, NCCL)", False, exit=code, error=err.strip()[-800:])
        return
    m = _metrics(run)
    checks.add("train --nproc-per-node 1 (torchrun, NCCL)",
               m["distributed_backend"] == "nccl" and m["processes"] == 1 and m["val"]["miou"] > 0.3,
               backend=m["distributed_backend"], processes=m["processes"], **{"images/s": m["train_images_per_second"]},
               val_mIoU=round(m["val"]["miou"], 4), seconds=round(secs, 1))


def _resume(checks: Checks, out: Path) -> None:
    from edgeseg.core.errors import CheckpointError
    from edgeseg.train.checkpoint import load_checkpoint

    args = ["train", "--model", "lraspp", *COMMON, "--epochs", 4, "--checkpoint-every", 10]
    ref, cut = out / "resume-ref", out / "resume-cut"
    code, _, err, _ = edgeseg(*args, "-o", ref)
    if code != 0:
        checks.add("kill -9 then --resume", False, step="reference run", exit=code, error=err.strip()[-800:])
        return

    def step() -> int:
        try:
            return int(load_checkpoint(cut).state.get("global_step", 0))
        except CheckpointError:  # not written yet
            return -1

    p = edgeseg(*args, "-o", cut, wait=False)
    deadline = time.time() + 180
    while step() < 50 and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed_at = step()
    p.send_signal(signal.SIGKILL)
    p.wait()
    code, _, err, _ = edgeseg(*args, "-o", cut, "--resume")
    if code != 0:
        checks.add("kill -9 then --resume", False, killed_at_step=killed_at, exit=code, error=err.strip()[-800:])
        return
    a, b = load_checkpoint(ref), load_checkpoint(cut)
    ma, mb = _metrics(ref), _metrics(cut)
    rel = max(((a.weights[k].double() - b.weights[k].double()).norm()
               / a.weights[k].double().norm().clamp_min(1e-30)).item()
              for k in a.weights if a.weights[k].is_floating_point())
    checks.add("kill -9 then --resume", 0 < killed_at < 128 and a.state["global_step"] == b.state["global_step"]
               and abs(ma["val"]["miou"] - mb["val"]["miou"]) <= 0.05,
               killed_at_step=killed_at, steps=b.state["global_step"], val_mIoU=f"{ma['val']['miou']:.4f} vs "
               f"{mb['val']['miou']:.4f}", max_weight_rel_diff=f"{rel:.2e}")


def _export_and_check(checks: Checks, run: Path) -> None:
    for target, precision in (("tflite", "fp32"), ("coreml", "fp16")):
        name = f"export + check {target} {precision}"
        code, _, err, secs = edgeseg("export", run, "--target", target, "--precision", precision, "-q")
        if code != 0:
            checks.add(name, False, step="export", exit=code, error=err.strip()[-800:])
            continue
        code, out, err, _ = edgeseg("check", run, "--target", target, "--precision", precision, "--json", "-q")
        try:
            res = json.loads(out)
        except ValueError:
            checks.add(name, False, step="check", exit=code, error=err.strip()[-800:])
            continue
        checks.add(name, code == 0 and res["status"] == "passed", status=res["status"], runtime=res["runtime"],
                   agreement_pct=res["pixel_agreement"], mask_mIoU=res["mask_miou"], export_seconds=round(secs, 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of 32 steps for the AMP runs (default 10)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    a = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda}, "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); this check needs a GPU, "
              f"nothing was run", file=sys.stderr)
        return 2
    print(f"gpu_check on {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'})", flush=True)
    t0 = time.time()
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="edgeseg-gpu-check-") as tmp:
        out = a.output or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for model in MODELS:
            for amp in ("bf16", "fp16"):
                run = _train(checks, out, model, amp, compile_=(amp == "bf16") == (model == "lraspp"),
                             epochs=a.epochs)
                if run is not None and model == "lraspp" and amp == "bf16":
                    export_run = run
        _torchrun(checks, out)
        _resume(checks, out)
        if "export_run" in locals():
            _export_and_check(checks, export_run)
        else:
            checks.add("export + check", False, reason="the LR-ASPP bf16 run failed: nothing to export")
        seconds = round(time.time() - t0, 1)
        report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "seconds": seconds,
                  "checks": checks.rows, "failed": checks.failed}
        if a.output:
            (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    if a.json:
        print(json.dumps(report, indent=2))
    print(f"{len(checks.rows) - len(checks.failed)}/{len(checks.rows)} checks passed in {seconds} s"
          + (f"; FAILED: {', '.join(checks.failed)}" if checks.failed else ""))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
