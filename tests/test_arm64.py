"""Parity on every LiteRT CPU kernel path: the host's XNNPACK, builtin and reference kernels, and LiteRT's aarch64
build under qemu user-mode emulation (``check --device arm64``)."""

import json
import os
import platform
import shutil

import pytest

from edgeseg.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def int8_run(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("arm") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "report.*", ".edgeseg.lock"))
    assert main(["export", str(run), "--target", "tflite", "--precision", "int8", "--int8-route", "direct", "-q"]) == 0
    return run


def _paths(run):
    p = json.loads((run / "export" / "tflite-int8" / "kernel-paths.json").read_text())
    return p, {r["path"]: r for r in p["by_runtime"].values()}


def test_kernel_paths_diverge_and_the_gate_takes_the_worst_gated_path(int8_run, capsys):
    """LiteRT's builtin int8 kernels round differently from XNNPACK's (measured: 26 of 49k mask pixels here, 1-2 %
    on the quickstart): the check records every path, gates only the app's (XNNPACK), and fails a path whose
    masks fall below the gate once that path is gated."""
    args = ["check", str(int8_run), "--target", "tflite", "--precision", "int8", "-q"]
    assert main([*args, "--kernels", "xnnpack,builtin,reference"]) == 0
    out = capsys.readouterr().out
    p, paths = _paths(int8_run)
    assert list(paths) == ["x86-64 xnnpack", "x86-64 builtin", "x86-64 reference"]
    assert [r["gated"] for r in paths.values()] == [True, False, False]
    xnn, builtin = paths["x86-64 xnnpack"], paths["x86-64 builtin"]
    assert xnn["bit_exact_vs_host_xnnpack"] and not builtin["bit_exact_vs_host_xnnpack"]
    assert xnn["machine"] == platform.machine() and xnn["kernels"] == "xnnpack"
    assert p["pixel_agreement"] == xnn["pixel_agreement"]  # the verdict is the gated path's
    assert "x86-64 builtin               PASSED  (not gated)" in out and "differs from x86-64 XNNPACK" in out
    figures = {k: (r["pixel_agreement"], r["mask_miou"]) for k, r in paths.items()}
    assert figures["x86-64 builtin"] != figures["x86-64 xnnpack"], figures  # the paths' masks diverge
    hi, lo = sorted(("x86-64 xnnpack", "x86-64 builtin"), key=lambda k: figures[k], reverse=True)
    bar = str(figures[hi][0])
    if figures[hi][0] == figures[lo][0]:  # same agreement, different masks: gate on the mask mIoU instead
        gate = ["--min-mask-miou", str(figures[hi][1])]
    else:
        gate = ["--min-agreement", bar]
    # gating both paths: the worse one fails the check and is named
    assert main([*args, "--kernels", "xnnpack,builtin", "--gate-kernels", "xnnpack,builtin", *gate]) == 1
    p, _ = _paths(int8_run)
    runtime = {r["path"]: key for key, r in p["by_runtime"].items()}
    assert p["status"] == "failed" and p["failures"] and all(f.startswith(runtime[lo] + ": ") for f in p["failures"])
    assert p["pixel_agreement"] == figures[lo][0]
    # gating the better path alone passes at the same bar
    assert main([*args, "--kernels", "xnnpack,builtin", "--gate-kernels", hi.split()[-1], *gate]) == 0
    capsys.readouterr()
    assert main([*args, "--kernels", "xnnpack,neon"]) == 2
    assert "unknown kernel path 'neon'; choose from xnnpack, builtin, reference" in capsys.readouterr().err
    assert main(["check", str(int8_run), "--target", "onnx", "--kernels", "builtin", "-q"]) == 2
    assert "--kernels and --gate-kernels apply to --target tflite" in capsys.readouterr().err


def test_a_missing_runtime_says_how_to_get_it_and_setup_never_leaves_half_a_cache(int8_run, tmp_path, monkeypatch,
                                                                                   capsys):
    from exporters.arm64 import Arm64Missing, setup

    monkeypatch.setenv("EDGESEG_CACHE", str(tmp_path / "cache"))
    assert main(["check", str(int8_run), "--target", "tflite", "--precision", "int8", "--device", "arm64"]) == 2
    assert "no emulated arm64 runtime in" in capsys.readouterr().err
    assert main(["device", "status", "arm64"]) == 1
    out = capsys.readouterr().out
    assert "provision it once" in out and "edgeseg device setup arm64" in out
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no mmdebstrap, no apt-get
    with pytest.raises(Arm64Missing, match="mmdebstrap is missing and this system has no apt-get"):
        setup(log=lambda s: None)
    # neither a cache nor a temporary one left behind (only the provisioning lock, which holds nothing)
    assert sorted(os.listdir(tmp_path / "cache")) == [".arm64.lock"]


@pytest.fixture(scope="module")
def arm64_runtime():
    """Provisions the emulator and the aarch64 LiteRT once per machine (~30 s; kept in ~/.cache/edgeseg/arm64)."""
    from exporters.arm64 import setup

    return setup(log=lambda s: None)


def test_emulated_arm64_runs_arm_kernels_bit_exact_with_x86_xnnpack(int8_run, arm64_runtime, capsys):
    """The ARM paths run in an aarch64 interpreter (its own machine and CPU features, not the host's); XNNPACK's
    int8 is bit for bit the x86 result on both CPU profiles, and the report and bundle evidence show every path."""
    assert int(arm64_runtime["qemu"].split(".")[0]) >= 10 and arm64_runtime["python"].startswith("3.11")
    assert main(["check", str(int8_run), "--target", "tflite", "--precision", "int8", "--device", "arm64", "--limit",
                 "2", "--kernels", "xnnpack,builtin", "-q"]) == 0
    p, paths = _paths(int8_run)
    assert list(paths) == ["x86-64 xnnpack", "arm64 cortex-a76 xnnpack", "arm64 cortex-a76 builtin",
                           "arm64 cortex-a53 xnnpack", "arm64 cortex-a53 builtin"]
    assert p["images"] == 2
    for name, r in paths.items():
        assert r["machine"] == ("aarch64" if name.startswith("arm64") else platform.machine())
    a76, a53 = paths["arm64 cortex-a76 xnnpack"], paths["arm64 cortex-a53 xnnpack"]
    assert "asimddp" in a76["cpu_features"] and "asimddp" not in a53["cpu_features"]  # dot-product: a76 only
    assert a76["emulated_seconds"] > 0 and a76["gated"] and not paths["arm64 cortex-a76 builtin"]["gated"]
    assert a76["bit_exact_vs_host_xnnpack"] and a53["bit_exact_vs_host_xnnpack"]
    assert not paths["arm64 cortex-a76 builtin"]["bit_exact_vs_host_xnnpack"]
    assert "arm64 cortex-a53 builtin" in paths["arm64 cortex-a76 builtin"]["bit_exact_with"]
    assert p["schema"] == "edgeseg.kernel-paths/1" and len(p["model_digest"]) == 16
    # the kernel-path record sits beside parity.json (the test split's check), which it does not replace
    assert not (int8_run / "export" / "tflite-int8" / "parity.json").exists()
    assert main(["check", str(int8_run), "--target", "tflite", "--precision", "int8", "-q"]) == 0
    assert json.loads((int8_run / "export" / "tflite-int8" / "parity.json").read_text())["images"] == 12
    assert main(["report", str(int8_run), "--runs", "2", "-q"]) == 0
    md = (int8_run / "report.md").read_text()
    assert "| tflite-int8 | arm64 cortex-a53 xnnpack | yes | passed |" in md
    assert "aarch64 (asimddp, asimdhp)" in md and "aarch64 (no dot-product, no fp16)" in md
    from edgeseg.tasks import task_of

    task = task_of(int8_run)
    entry = next(e for e in task.exports(int8_run, "tflite") if e.name == "tflite-int8")
    ev = task.evidence(entry)
    assert [k["path"] for k in ev["kernel_paths"]] == list(paths)
