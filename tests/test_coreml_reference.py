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
    from edgeseg.tasks.semantic.run import check_run, export_run

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


@pytest.mark.parametrize("name,kw,precision,ops", [
    ("unet", {"base": 16, "depth": 2}, "palettize4", {"constexpr_lut_to_dense"}),
    ("unet", {"base": 16, "depth": 2}, "palettize8-uniform", {"constexpr_lut_to_dense"}),
    ("unet", {"base": 16, "depth": 2}, "w8a8", {"constexpr_affine_dequantize", "quantize", "dequantize"}),
    # torchvision's MobileNetV3 + LR-ASPP head through torch.fx tracing and the quantized conversion
    ("lraspp", {"encoder": "mobilenet_v3_small", "inter_channels": 32}, "w8a8", {"quantize", "dequantize"}),
])
def test_compression_modes_store_what_they_claim_and_keep_masks(name, kw, precision, ops, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 5, **kw).eval()
    x = _inputs()
    opts = ExportOptions(precision=precision, class_names=tuple("abcde"), normalization=NORM,
                         calibration=[x[:1], x[1:]])
    res = TARGETS["coreml"].export(model, np.zeros((1, 3, 64, 64), np.float32), opts, tmp_path)
    assert ops <= set(res.details["weight_ops"])
    assert res.details["deployment_target"] == ("iOS17" if precision == "w8a8" else "iOS16")
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    y = ReferenceRunner(res.path)(x)
    # untrained random weights make near-ties everywhere; the masks must still mostly agree
    assert (y.argmax(1) == ref.argmax(1)).mean() >= (0.8 if precision in ("palettize4", "w8a8") else 0.95)


def test_argmax_output_multiarray_input_and_app_metadata(tmp_path):
    import coremltools as ct

    torch.manual_seed(0)
    model = build_model("unet", 5, base=8, depth=2).eval()
    x = _inputs()
    opts = ExportOptions(precision="fp32", class_names=tuple("abcde"), normalization=NORM, output="argmax",
                         input="multiarray", deployment_target="iOS18",
                         metadata={"author": "Jane", "license": "MIT", "version": "1.2", "edgeseg_model": "unet"})
    res = TARGETS["coreml"].export(model, np.zeros((1, 3, 64, 64), np.float32), opts, tmp_path)
    ml = ct.models.MLModel(str(res.path), skip_model_load=True)
    assert (ml.author, ml.license, ml.version) == ("Jane", "MIT", "1.2")
    meta = ml.user_defined_metadata
    assert meta["output"] == "argmax" and meta["input"] == "multiarray" and meta["deployment_target"] == "iOS18"
    assert meta["classes"] == '["a", "b", "c", "d", "e"]' and meta["edgeseg_model"] == "unet"
    y = ReferenceRunner(res.path)(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert y.shape == (2, 64, 64) and y.dtype.kind == "i"
    assert (y == ref.argmax(1)).mean() == 1.0


def test_w8a8_below_ios17_is_refused(tmp_path):
    from exporters import ExporterError

    opts = ExportOptions(precision="w8a8", class_names=tuple("abcde"), normalization=NORM,
                         calibration=[_inputs()[:1]], deployment_target="iOS16")
    with pytest.raises(ExporterError, match="'w8a8' \\(int8 activations\\) needs deployment target iOS17"):
        TARGETS["coreml"].export(build_model("unet", 5, base=8, depth=2).eval(),
                                 np.zeros((1, 3, 64, 64), np.float32), opts, tmp_path)
