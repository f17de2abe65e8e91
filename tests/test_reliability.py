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
from edgeseg.lock import LOCK_NAME, run_lock


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
    code = ("import sys, time; from edgeseg.lock import run_lock\n"
            f"with run_lock(sys.argv[1], 'report'):\n    print('locked', flush=True)\n    time.sleep(60)\n")
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
