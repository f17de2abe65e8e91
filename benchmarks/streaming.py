"""Bounded memory over long checks: `edgeseg check` streamed over 100 and 1,000 images, and 1,000 with a broken
image at 900; `edgeseg bench` over 1,000 timed runs. Prints peak RSS (the child process's ru_maxrss) per case.

Writes the images as PNG files in the folder format (real decoding, not arrays in memory), trains the tiny U-Net
of the test suite first unless ``--run`` names a run with an ONNX export.

    python benchmarks/streaming.py [--size 128] [--run RUN] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(cmd: list[str]) -> tuple[int, float, float, str]:
    """Run ``python -m edgeseg cmd`` in a fresh process: exit code, seconds, its peak RSS in MB, stdout."""
    code = ("import resource, subprocess, sys, json\n"
            "p = subprocess.run([sys.executable, '-m', 'edgeseg', *sys.argv[1:]], capture_output=True, text=True)\n"
            "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
            "print(json.dumps({'code': p.returncode, 'rss': rss, 'out': p.stdout, 'err': p.stderr[-500:]}))\n")
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    r = json.loads(out.stdout)
    return r["code"], time.time() - t0, r["rss"], r["out"] or r["err"]


def _folder(root: Path, count: int, size: int, broken: int | None) -> str:
    from edgeseg.data.synthetic import write_folder

    spec = write_folder(root, count, size=size, seed=5)
    if broken:
        (root / "images" / f"{broken - 1:05d}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00broken" * 64)
    return spec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeseg-streaming-"))
    run = a.run
    if run is None:
        from edgeseg.train.config import TrainConfig
        from edgeseg.train.loop import train

        run = work / "run"
        train(TrainConfig(model="unet", model_kwargs={"base": 12, "depth": 3}, data="synthetic?train=96&val=12&test=12",
                          image_size=a.size, epochs=2, batch_size=8), run, quiet=True, log=lambda s: None)
        code, _, _, out = _child(["export", str(run), "--target", "onnx", "-q"])
        assert code == 0, out
    rows = []
    for count, broken in ((100, None), (1000, None), (1000, 900)):
        spec = _folder(work / f"data-{count}-{broken}", count, a.size, broken)
        code, secs, rss, out = _child(["check", str(run), "--target", "onnx", "--data", spec, "--json", "-q"])
        res = json.loads(out) if out.strip().startswith("{") else {}
        rows.append({"command": "check", "images": count, "broken": broken, "exit": code, "seconds": round(secs, 1),
                     "peak_rss_mb": round(rss), "compared": res.get("images"), "reason": res.get("reason", "")})
    model = run / "export" / "onnx-fp32" / "model.onnx"
    code, secs, rss, out = _child(["bench", str(model), "--runs", "1000", "--threads", "2", "--json", "-q"])
    rows.append({"command": "bench --runs 1000", "images": 1000, "broken": None, "exit": code,
                 "seconds": round(secs, 1), "peak_rss_mb": round(rss), "compared": None, "reason": ""})
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'command':18} {'images':>6} {'broken':>6} {'exit':>4} {'s':>6} {'peak RSS MB':>11} {'compared':>8}")
    for r in rows:
        print(f"{r['command']:18} {r['images']:6} {str(r['broken'] or '-'):>6} {r['exit']:4} {r['seconds']:6} "
              f"{r['peak_rss_mb']:11} {str(r['compared'] or '-'):>8}  {r['reason'][:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
