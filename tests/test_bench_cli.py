"""``edgeseg bench`` on files edgeseg made and on one it did not."""

from __future__ import annotations

import json

import pytest

from conftest import SELFIE
from edgeseg.cli import main


@pytest.mark.skipif(not SELFIE.exists(), reason="../shared/models/selfie_segmentation.tflite not present")
def test_bench_a_tflite_edgeseg_did_not_make(capsys):
    assert main(["bench", str(SELFIE), "--threads", "1,2", "--runs", "3", "--json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["schema"] == "edgeseg.bench/1" and r["format"] == "tflite" and r["size_bytes"] == SELFIE.stat().st_size
    assert r["io"]["inputs"][0]["shape"] == [1, 256, 256, 3] and r["io"]["outputs"][0]["shape"] == [1, 256, 256, 1]
    rows = {(x["threads"], x["config"]): x for x in r["latency"]}
    assert set(rows) == {(1, "xnnpack=on"), (1, "xnnpack=off"), (2, "xnnpack=on"), (2, "xnnpack=off")}
    assert rows[(1, "xnnpack=on")]["median_ms"] > 0 and rows[(1, "xnnpack=on")]["runs"] == 3
    # MediaPipe's transposed-conv custom op exists only in its XNNPACK kernels: said, not hidden
    assert "Convolution2DTransposeBias" in rows[(1, "xnnpack=off")]["error"]
    assert r["hardware"]["cores"] >= 1 and "ai-edge-litert" in r["versions"]


def test_bench_checkpoint_onnx_and_mlpackage(tiny_run, tmp_path, capsys):
    import platform
    import shutil

    from edgeseg.models import count_params
    from edgeseg.tasks.semantic.run import export_run
    from edgeseg.train.checkpoint import load_checkpoint

    # a copy: the shared tiny run must keep only the exports other tests made
    shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("export", "report.*"))
    tiny_run = tmp_path / "run"

    assert main(["bench", str(tiny_run), "--threads", "1", "--runs", "2", "--json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["format"] == "pytorch" and r["params"] == count_params(load_checkpoint(tiny_run).build_model())
    assert r["macs"] > 0 and r["io"]["inputs"][0]["shape"] == [1, 3, 64, 64]
    assert r["latency"][0]["runtime"].startswith("PyTorch") and r["latency"][0]["median_ms"] > 0
    rec = export_run(tiny_run, "onnx", log=lambda s: None)
    assert main(["bench", str(tiny_run / rec["path"]), "--threads", "2", "--runs", "2", "--json", "-q"]) == 0
    o = json.loads(capsys.readouterr().out)
    # the ONNX initializers are the weights (BatchNorm kept unfused by the exporter: same count)
    assert o["constant_elements"] >= r["params"] * 0.99 and o["latency"][0]["runtime"].startswith("onnxruntime")
    rec = export_run(tiny_run, "coreml", log=lambda s: None)
    assert main(["bench", str(tiny_run / rec["path"]), "--runs", "2", "--json", "-q"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["io"]["inputs"][0]["kind"] == "image"
    if platform.system() != "Darwin":
        # timed by reference execution, and marked as such, never passed off as a device's Core ML figure
        assert "needs macOS" in c["latency_note"] and "not a device" in c["latency_note"]
        assert [r["config"] for r in c["latency"]] == ["reference-execution"] * 3
        assert all(r["median_ms"] > 0 and "reference execution" in r["runtime"] for r in c["latency"])


def test_bench_bad_input(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope.tflite")]) == 2
    assert "MODEL '" in capsys.readouterr().err
    (tmp_path / "m.txt").write_text("x")
    assert main(["bench", str(tmp_path / "m.txt")]) == 2
    assert "is not a .tflite, .onnx, .mlpackage" in capsys.readouterr().err
    (tmp_path / "bad.tflite").write_bytes(b"garbage")
    assert main(["bench", str(tmp_path / "bad.tflite"), "-q"]) == 1
    assert "LiteRT cannot load" in capsys.readouterr().err
