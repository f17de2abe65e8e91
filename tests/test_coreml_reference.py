"""Reference execution of saved Core ML programs: every architecture, compression, corruption, bad ops."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from edgeseg.models import build_model
from exporters import TARGETS, ExportOptions, Normalization
from exporters.coreml_reference import MILReference, ReferenceRunner, UnsupportedOp
from test_architectures import ARCHS

pytestmark = pytest.mark.slow
NORM = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _inputs(size=64):
    """Normalized NCHW images whose pixels are whole numbers (what an app's camera frame gives)."""
    pix = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype(np.float32) / 255
    return ((pix - np.array(NORM.mean)) / np.array(NORM.std)).transpose(0, 3, 1, 2).astype(np.float32)


def _export(model, precision, out, size=64):
    opts = ExportOptions(precision=precision, class_names=tuple("abcde"), normalization=NORM)
    out.mkdir(parents=True, exist_ok=True)
    return TARGETS["coreml"].export(model, np.zeros((1, 3, size, size), np.float32), opts, out)


@pytest.mark.parametrize("key", list(ARCHS))
def test_every_architecture_matches_pytorch_at_fp32_and_fp16(key, tmp_path):
    name, kw = key.split("+")[0], ARCHS[key][0]
    torch.manual_seed(0)
    model = build_model(name, 5, **kw).eval()
    x = _inputs()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    y32 = ReferenceRunner(_export(model, "fp32", tmp_path / "fp32").path)(x)
    assert np.abs(y32 - ref).max() < 1e-4
    y16 = ReferenceRunner(_export(model, "fp16", tmp_path / "fp16").path)(x)
    assert np.abs(y16 - ref).max() < 2e-2
    assert (y16.argmax(1) == ref.argmax(1)).mean() >= 0.99


@pytest.mark.parametrize("precision", ["int8", "palettize6"])
def test_compressed_weights_decompress_to_what_coremltools_reports(precision, tmp_path):
    torch.manual_seed(0)
    model = build_model("unet", 5, base=16, depth=2).eval()
    ref = MILReference(_export(model, precision, tmp_path).path)
    ops = [op for op in ref.fn.operations if op.op_type.startswith("constexpr_")]
    expected = {"int8": "constexpr_affine_dequantize", "palettize6": "constexpr_lut_to_dense"}[precision]
    assert ops and {op.op_type for op in ops} == {expected}
    mine = ref.dense_weights()
    for op in ops:
        theirs = np.asarray(op.materialized_val_inference(), np.float32)
        np.testing.assert_array_equal(mine[op.outputs[0].name], theirs)
    if precision == "palettize6":  # 6-bit palettes: at most 64 distinct values per weight
        assert max(len(np.unique(w)) for w in mine.values()) <= 64


def test_a_weight_altered_on_disk_fails_the_check(tiny_run, tmp_path):
    from edgeseg.pipeline import check_run, export_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
    rec = export_run(run, "coreml", "fp16", log=lambda s: None)
    assert check_run(run, "coreml", "fp16", log=lambda s: None).status == "passed"
    pkg = run / rec["path"]
    ref = MILReference(pkg)
    # the classifier's stored weight (the last conv's): find its bytes in the blob file, negate them in place
    last_conv = [op for op in ref.fn.operations if op.op_type == "conv"][-1]
    const = last_conv.inputs["weight"].op
    assert const.op_type == "const"
    raw = np.asarray(const.outputs[0].val).tobytes()
    blob = next(pkg.rglob("weight.bin"))
    data = bytearray(blob.read_bytes())
    at = data.find(raw)
    assert at >= 0 and data.find(raw, at + 1) < 0
    data[at: at + len(raw)] = (-np.asarray(const.outputs[0].val)).tobytes()
    blob.write_bytes(bytes(data))
    res = check_run(run, "coreml", "fp16", log=lambda s: None)
    assert res.status == "failed" and res.pixel_agreement < 98


def test_an_op_without_a_kernel_is_named_not_skipped(tmp_path, monkeypatch):
    import exporters.coreml_reference as cr

    torch.manual_seed(0)
    path = _export(build_model("unet", 5, base=8, depth=2).eval(), "fp32", tmp_path).path
    real = cr._kernels
    monkeypatch.setattr(cr, "_kernels", lambda: {k: v for k, v in real().items() if k != "conv"})
    with pytest.raises(UnsupportedOp, match=r"uses Core ML op\(s\) conv that the reference execution has no kernel"):
        MILReference(path)


def test_a_damaged_package_is_a_clear_error(tmp_path):
    from exporters import ExporterError

    torch.manual_seed(0)
    path = _export(build_model("unet", 5, base=8, depth=2).eval(), "fp32", tmp_path).path
    (path / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\x00garbage")
    with pytest.raises(ExporterError, match="is not a readable Core ML ML Program"):
        MILReference(path)
