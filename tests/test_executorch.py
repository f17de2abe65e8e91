"""ExecuTorch target: .pte files (XNNPACK delegate) run by ExecuTorch's own runtime, with the same parity, report and
bundle as the other targets."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("executorch")
pytestmark = pytest.mark.slow  # lowering: tens of seconds per file


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """The tiny U-Net run exported to ExecuTorch fp32 and int8 (and TFLite int8 for comparison) by the CLI."""
    from edgeseg.cli import main

    run = tmp_path_factory.mktemp("et") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "report.*", ".edgeseg.lock"))
    assert main(["export", str(run), "--target", "executorch", "--precision", "fp32,int8", "-q"]) == 0
    return run


def test_export_check_report_bundle(run, tmp_path, capsys):
    from edgeseg.cli import main
    from edgeseg.core.schemas import problems

    recs = {p: json.loads((run / "export" / f"executorch-{p}" / "export.json").read_text()) for p in ("fp32", "int8")}
    for p, rec in recs.items():
        d = rec["details"]["delegation"]
        # the U-Net (conv, BN, ReLU, max-pool, transposed conv, concat) runs whole in one XNNPACK partition
        assert d["partitions"] == 1 and d["fallback_ops"] == 0 and d["fallback"] == {}, (p, d)
        assert d["delegated"]["convolution"] >= 10
        assert rec["path"].endswith(".pte") and (run / rec["path"]).read_bytes()[4:8] == b"ET12"  # the flatbuffer id
    assert recs["int8"]["details"]["calibration_images"] == 96  # every training image (fewer than --calibration)
    assert recs["int8"]["size_bytes"] < 0.4 * recs["fp32"]["size_bytes"]  # int8 weights

    capsys.readouterr()
    assert main(["check", str(run), "--target", "executorch", "--precision", "fp32,int8", "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    fp32, int8 = out if isinstance(out, list) else out["results"]
    assert fp32["runtime"].startswith("ExecuTorch 1.") and "XNNPACK" in fp32["runtime"]
    assert fp32["pixel_agreement"] == 100.0 and fp32["max_abs_logit_diff"] < 1e-4
    assert int8["status"] == "passed" and int8["pixel_agreement"] >= 98.0 and int8["mask_miou"] >= 0.95

    assert main(["report", str(run), "--runs", "3", "--json", "-q"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert problems(rep, "report-1") == []
    rows = {r["name"]: r for r in rep["results"]}
    for name in ("executorch-fp32", "executorch-int8"):
        assert rows[name]["latency"]["median_ms"] > 0 and "ExecuTorch" in rows[name]["latency"]["runtime"]
        assert rows[name]["delegation"]["fallback_ops"] == 0
    md = (run / "report.md").read_text()
    assert "## ExecuTorch delegation (XNNPACK)" in md and "| executorch-int8 | 1 |" in md

    dist = tmp_path / "dist"
    assert main(["bundle", str(run), "-o", str(dist), "--executorch", "--json", "-q"]) == 0
    man = json.loads(capsys.readouterr().out)
    e = man["executorch"]
    assert e["export"] == "executorch-int8" and e["parity"]["status"] == "passed"  # the smallest passing one
    assert e["input"] == {"shape": [1, 3, 64, 64], "dtype": "float32", "layout": "NCHW",
                          "values": "normalized: (pixel / 255 - mean) / std"}
    assert e["output"]["shape"] == [1, len(man["classes"]), 64, 64] and e["output"]["dtype"] == "float32"
    assert e["delegation"]["fallback_ops"] == 0 and e["latency"]["median_ms"] > 0
    sha = hashlib.sha256((run / recs["int8"]["path"]).read_bytes()).hexdigest()
    assert next(f for f in man["files"] if f["path"] == "executorch/model.pte")["sha256"] == sha  # the checked file
    assert man["platforms"] == {}  # no TFLite or Core ML export in this run: the .pte alone
    assert main(["bundle", "--verify", str(dist), "-q"]) == 0
    readme = (dist / "README.md").read_text()
    assert "## ExecuTorch (`executorch/model.pte`, Android and iOS)" in readme
    assert "Tensor.fromBlob(chw, longArrayOf(1, 3, H.toLong(), W.toLong()))" in readme
    assert "Tensor<Float>(chw, shape: [1, 3, H, W])" in readme and "const val NUM_CLASSES = " in readme

    # asked for a .pte that did not pass: refused, naming the fix, and nothing written
    (run / "export" / "executorch-fp32" / "parity.json").unlink()
    assert main(["bundle", str(run), "-o", str(tmp_path / "d2"), "--executorch", "fp32"]) == 2
    assert "edgeseg check first" in capsys.readouterr().err and not (tmp_path / "d2").exists()


def test_fallback_is_recorded_and_the_runtime_runs_the_file(tmp_path):
    """An in-graph argmax has no XNNPACK kernel: the record names it among the ops left to the portable kernels, and
    ExecuTorch's runtime (not PyTorch) computes the class map the model computes."""
    from exporters import TARGETS, ExporterError, ExportOptions

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 4, 1)).eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    target = TARGETS["executorch"]
    res = target.export(model, x[:1], ExportOptions("fp32", output="argmax"), tmp_path)
    d = res.details["delegation"]
    assert d["partitions"] == 1 and d["delegated"] == {"convolution": 2, "relu": 1}
    # argmax and its cast to int32 (ExecuTorch's _to_dim_order_copy) run on the portable kernels
    assert d["fallback"] == {"argmax": 1, "dim_order_ops._to_dim_order_copy": 1} and d["fallback_ops"] == 2
    runner = target.load(res.path, threads=1)
    got = runner(x)
    assert got.dtype == np.int32 and got.shape == (2, 32, 32)
    with torch.no_grad():
        assert np.array_equal(got, model(torch.from_numpy(x)).argmax(1).numpy())

    bad = tmp_path / "bad.pte"
    bad.write_bytes(res.path.read_bytes()[:200])
    with pytest.raises(ExporterError, match="ExecuTorch cannot load '.*bad.pte'"):
        target.load(bad)
    with pytest.raises(ExporterError, match="has no precision 'fp16'"):
        target.export(model, x[:1], ExportOptions("fp16"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_failed_full_int8_falls_back_to_the_one_search(tiny_run, tmp_path, monkeypatch):
    """When the full int8 .pte fails the gate on the validation split, the export searches which activations to
    keep float (the one search, judged in PyTorch on the converted graph), lowers that mix and measures it with
    the runtime; the record lists both files. A gate no int8 file can pass (100 % agreement) forces the path."""
    from exporters import executorch as et

    from edgeseg.quantize import executorch_int8
    from edgeseg.tasks.semantic.parity import thresholds_for
    from edgeseg.train.checkpoint import load_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "report.*", ".edgeseg.lock"))
    strict = {**thresholds_for("int8"), "min_agreement": 100.0}
    monkeypatch.setattr(executorch_int8, "thresholds_for", lambda precision: strict)
    rec = executorch_int8.export_int8(run, calibration=8, log=lambda s: None, max_float_macs=30.0, max_steps=2)
    lad = rec["details"]["ladder"]
    full, mixed = lad["tried"]
    assert (full["name"], mixed["name"]) == ("full-int8", "mixed") and not full["passed"] and not mixed["passed"]
    assert 1 <= len(mixed["float_activations"]) <= 2 and 0 <= mixed["float_macs_pct"] <= 30.0
    assert lad["mixed_search"]["passed"] is False and lad["chosen"] in ("full-int8", "mixed")
    assert lad["why"].startswith("no file passes on the validation split")
    assert rec["details"]["delegation"]["fallback_ops"] == 0  # float parts stay in the XNNPACK partition
    assert rec["details"]["calibration_images"] == 8

    # the helpers the search stands on: removing pairs keeps float exactly those tensors; MACs shares are exact
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    graph, _ = et.quantized_graph(load_checkpoint(run).build_model(), x, [x])
    names = et.activation_quantizers(graph)
    assert len(names) >= 10 and et.float_macs(graph, []) == 0.0 and et.float_macs(graph, names) == 1.0
    g = et.with_float(graph, names[:3])
    assert len(et.activation_quantizers(g)) == len(names) - 3
