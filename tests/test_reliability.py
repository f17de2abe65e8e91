"""Faults a CI machine meets: two processes on one run, a killed lock holder, a full disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from edgeseg.cli import main
from edgeseg.core.lock import LOCK_NAME, run_lock

pytestmark = pytest.mark.slow  # kills and restarts real commands: tens of seconds each


@pytest.fixture
def run(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("export", "report.*"))
    return tmp_path / "run"


def test_a_second_process_on_the_same_run_is_refused(run, capsys):
    with run_lock(run, "train"):
        assert main(["export", str(run), "--target", "onnx"]) == 2
        err = capsys.readouterr().err
        assert f"run directory '{run}' is in use by edgeseg train (pid {os.getpid()}" in err
        assert not (run / "export" / "onnx-fp32").exists()
    assert main(["export", str(run), "--target", "onnx", "-q"]) == 0  # released


def test_the_lock_dies_with_its_process_even_after_kill_9(run, capsys):
    code = ("import sys, time; from edgeseg.core.lock import run_lock\n"
            "with run_lock(sys.argv[1], 'report'):\n    print('locked', flush=True)\n    time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["export", str(run), "--target", "onnx"]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / LOCK_NAME).exists()  # the file stays; the lock does not
    assert main(["export", str(run), "--target", "onnx", "-q"]) == 0


def test_a_full_disk_keeps_the_last_good_artifacts(run):
    """The report written again under a file-size limit (what a full disk looks like to a process): a clear
    error, exit 1, and the previous report.json/report.md/report.html untouched, no temporary files left."""
    assert main(["export", str(run), "--target", "onnx", "-q"]) == 0
    assert main(["report", str(run), "--runs", "2", "-q", "--json"]) == 0
    before = {p.name: p.read_bytes() for p in run.glob("report.*")}
    assert set(before) == {"report.json", "report.md", "report.html"}
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))\n"  # report.json alone is larger
            "from edgeseg.cli import main\n"
            "sys.exit(main(['report', sys.argv[1], '--runs', '2', '-q']))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 1, p.stderr[-2000:]
    assert "out of disk space (or over the file size limit)" in p.stderr and "Earlier artifacts are intact" in p.stderr
    assert {p.name: p.read_bytes() for p in run.glob("report.*")} == before
    assert not [q for q in run.iterdir() if q.name.startswith(".report")]
    json.loads(before["report.json"])


def _folder_of_scenes(root, count: int, broken: int | None = None):
    """``count`` synthetic scenes as PNG files (the folder format), image ``broken`` (1-based) replaced by bytes
    no decoder reads."""
    from edgeseg.data.synthetic import write_folder

    spec = write_folder(root, count, size=64, seed=3)
    if broken:
        (root / "images" / f"{broken - 1:05d}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 40)
    return spec


def test_a_broken_image_stops_check_keeping_the_figures_before_it(run, tmp_path, capsys):
    """The streamed check over a folder dataset whose image 20 of 24 cannot be decoded: exit 1, the message names
    the file, parity.json holds the figures of the 19 images before it."""
    assert main(["export", str(run), "--target", "onnx", "-q"]) == 0
    spec = _folder_of_scenes(tmp_path / "photos", 24, broken=20)
    capsys.readouterr()
    assert main(["check", str(run), "--target", "onnx", "--data", spec, "--json", "-q"]) == 1
    res = json.loads(capsys.readouterr().out)
    assert res["status"] == "failed" and res["images"] == 19
    assert res["reason"].startswith("stopped at image 20 of 24: image '")
    assert "00019.png' cannot be decoded" in res["reason"]
    assert res["pixel_agreement"] > 99.9  # the 19 images before it were compared
    saved = json.loads((run / "export" / "onnx-fp32" / "parity.json").read_text())
    assert saved["images"] == 19 and saved["reason"] == res["reason"]
    # the same folder without the broken file passes on all 24
    spec = _folder_of_scenes(tmp_path / "photos2", 24)
    assert main(["check", str(run), "--target", "onnx", "--data", spec, "-q"]) == 0


def _kill_at(cmd, delay: float):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-m", "edgeseg", *cmd], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        p.wait(timeout=delay)  # finished before that moment: nothing left to kill (and no idle core meanwhile)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the whole group: converters may run helpers
        p.wait()
    return p.returncode


@pytest.mark.parametrize("delays", [(1.5, 3.0, 4.5, 6.0)])
def test_kill_9_during_export_and_bundle_leaves_only_complete_artifacts(run, tmp_path, delays):
    """``kill -9`` at several moments of ``export`` and ``bundle``: afterwards the run holds either no export or
    a complete one (it loads and passes its check), never a partial file; the command run again finishes."""
    from exporters import TARGETS

    export_dir = run / "export" / "onnx-fp32"
    for d in delays:
        shutil.rmtree(run / "export", ignore_errors=True)
        code = _kill_at(["export", str(run), "--target", "onnx", "-q"], d)
        if (export_dir / "model.onnx").exists():  # complete: it loads
            TARGETS["onnx"].load(export_dir / "model.onnx")
        assert code in (-signal.SIGKILL, 0)
    assert main(["export", str(run), "--target", "onnx", "-q"]) == 0
    assert main(["check", str(run), "--target", "onnx", "-q"]) == 0
    assert main(["export", str(run), "--target", "coreml", "-q"]) == 0
    assert main(["check", str(run), "--target", "coreml", "-q"]) == 0
    dist = tmp_path / "dist"
    bundle = ["bundle", str(run), "-o", str(dist), "--tflite", "none", "--coreml", "fp16", "-q"]
    for d in delays:
        _kill_at(bundle, d)
        # the destination is absent or complete; a killed writer's temporary may remain beside it
        assert not dist.exists() or main(["bundle", "--verify", str(dist), "-q"]) == 0
    shutil.rmtree(dist, ignore_errors=True)
    assert main(bundle[:-1]) == 0
    assert main(["bundle", "--verify", str(dist), "-q"]) == 0
    # ... which the next write of the same artifact removes (its pid is gone)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dist.")] == []
    assert [p.name for p in export_dir.iterdir() if p.name.startswith(".")] == []


def test_kill_9_during_train_then_resume_finishes(tmp_path):
    """A real ``kill -9`` of ``edgeseg train`` after its first checkpoint: the checkpoint on disk is complete
    (it loads), and ``--resume`` finishes the run to its last epoch."""
    from edgeseg.train.checkpoint import load_checkpoint

    out = tmp_path / "run"
    args = ["train", "-o", str(out), "--model", "unet", "--model-opt", "base=8", "--model-opt", "depth=2",
            "--data", "synthetic?train=64&val=8&test=8", "--image-size", "64", "--epochs", "8", "--batch-size", "8",
            "-q"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-m", "edgeseg", *args], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "checkpoint.pt").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.7)  # somewhere inside a later epoch, or while it writes the next checkpoint
    assert p.poll() is None, "training finished before it could be killed; make it longer"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    epoch = load_checkpoint(out).state["epoch"]  # complete and loadable, whatever moment the kill hit
    assert 1 <= epoch < 8
    assert main([*args[:-1], "--resume", "-q"]) == 0
    assert load_checkpoint(out).state["epoch"] == 8


def test_kill_9_during_quantize_leaves_only_complete_exports(run):
    """``kill -9`` of ``edgeseg quantize`` at three moments: every quantized export present afterwards is complete
    (its file loads), none half-written; quantize run again finishes and passes."""
    from exporters import TARGETS

    out = run / "export" / "onnx-int8-ptq"
    for d in (4.0, 8.0, 12.0):
        shutil.rmtree(run / "export", ignore_errors=True)
        _kill_at(["quantize", str(run), "--method", "ptq", "--targets", "onnx", "--calibration", "16", "-q"], d)
        if (out / "model.onnx").exists():
            TARGETS["onnx"].load(out / "model.onnx")
    assert main(["quantize", str(run), "--method", "ptq", "--targets", "onnx", "--calibration", "16", "-q"]) == 0
    assert json.loads((out / "parity.json").read_text())["status"] == "passed"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
