"""``edgeseg quantize``: NNCF PTQ / QAT / accuracy control feeding every target, and mask-driven mixed precision."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from edgeseg.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("quant") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "report.*"))
    return run


def _quantize(run, capsys, *args):
    code = main(["quantize", str(run), *args, "--json", "-q"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def test_ptq_feeds_every_target_with_real_int8(run, capsys):
    code, s, err = _quantize(run, capsys, "--method", "ptq", "--targets", "tflite,onnx,openvino,coreml",
                             "--calibration", "64")
    assert code == 0 and s["calibration_images"] == 64, (s and s.get("targets"), err[-2000:])
    t = s["targets"]
    assert set(t) == {"tflite-int8-ptq", "onnx-int8-ptq", "openvino-int8-ptq", "coreml-w8a8-ptq"}
    for name, r in t.items():  # each checked against the float model on the test split
        assert r["status"] == "passed" and r["pixel_agreement"] >= 98.0 and r["mask_miou"] >= 0.95, name
        parity = json.loads((run / "export" / name / "parity.json").read_text())
        assert parity["pixel_agreement"] == r["pixel_agreement"]
    # proof of int8 in each file: TFLite tensor types, ONNX Q/DQ with int8 weights and only standard ops,
    # OpenVINO ops that the CPU runs in int8
    assert t["tflite-int8-ptq"]["details"]["input_dtype"] == "int8"
    assert t["tflite-int8-ptq"]["details"]["tensor_dtypes"].get("float32", 0) == 0
    ops = t["onnx-int8-ptq"]["details"]["ops"]
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    assert t["onnx-int8-ptq"]["details"]["int8_weights"] > 0 and not [k for k in ops if ":" in k]
    prec = t["openvino-int8-ptq"]["details"]["runtime_precisions"]
    assert prec.get("i8", 0) + prec.get("u8", 0) > 0
    fp32_onnx = sum(v.numel() * 4 for v in torch.load(run / "checkpoint.pt", weights_only=True)["weights"].values())
    assert t["onnx-int8-ptq"]["size_bytes"] < 0.5 * fp32_onnx
    # the exports are ordinary ones for report and bundle
    assert main(["report", str(run), "--runs", "2", "-q", "--json"]) == 0
    names = {r["name"] for r in json.loads((run / "report.json").read_text())["results"]}
    assert {"tflite-int8-ptq", "onnx-int8-ptq", "openvino-int8-ptq", "coreml-w8a8-ptq"} <= names


def test_qat_does_not_reduce_parity_versus_ptq(run, capsys):
    """On the tiny U-Net, NNCF PTQ is measurably lossy (< 100 % agreement with the float masks); QAT (distillation
    towards the float model, the run's loss at a small weight) must not be worse, in the same QDQ ONNX runtime."""
    code, ptq, _ = _quantize(run, capsys, "--method", "ptq", "--targets", "onnx")
    assert code == 0
    code, qat, _ = _quantize(run, capsys, "--method", "qat", "--targets", "onnx", "--epochs", "2")
    assert code == 0
    p, q = ptq["targets"]["onnx-int8-ptq"]["pixel_agreement"], qat["targets"]["onnx-int8-qat"]["pixel_agreement"]
    assert p < 100.0 and q >= p, (p, q)
    assert "QAT loss per epoch" in qat["notes"][0]


def test_accuracy_control_and_its_backends(run, capsys):
    code, s, _ = _quantize(run, capsys, "--method", "accuracy", "--targets", "onnx,openvino", "--max-drop", "0.02")
    assert code == 0
    for name in ("onnx-int8-accuracy", "openvino-int8-accuracy"):
        r = s["targets"][name]
        assert r["status"] == "passed" and r["reference_miou"] - r["exported_miou"] <= 0.02 + 0.01
    assert s["targets"]["onnx-int8-accuracy"]["details"]["ops"]["QuantizeLinear"] > 0
    code, _, err = _quantize(run, capsys, "--method", "accuracy", "--targets", "tflite")
    assert code == 2 and "backends here are ONNX and OpenVINO; it cannot produce tflite" in err


def test_bad_inputs(run, capsys, tmp_path):
    code, _, err = _quantize(run, capsys, "--method", "ptq", "--calibration", "8")
    assert code == 2 and "--calibration 8: at least 16 images are needed" in err
    code, _, err = _quantize(run, capsys, "--method", "ptx")
    assert code == 2 and "did you mean 'ptq'" in err
    # a threshold no mix can reach: the best reached, exit 1
    code, s, err = _quantize(run, capsys, "--method", "ptq", "--targets", "tflite", "--mixed-precision",
                             "--min-agreement", "100.0", "--max-float-layers", "2")
    assert code == 1 and "no mix within 10 % of the multiply-adds in float (2 steps) reaches the threshold" in err
    assert "best:" in err
    # a split without labels (every mask pixel ignored) is refused by name
    from edgeseg.tasks.semantic.run import labelled_split
    from edgeseg.train.checkpoint import load_checkpoint
    from PIL import Image

    root = tmp_path / "unlabelled"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(root / "masks" / f"{i}.png")
    ck = load_checkpoint(run)
    fake = SimpleNamespace(config=ck.config.replace(data=f"folder:{root}?split=0,1,0&ignore=255"),
                           preprocess=ck.preprocess)
    from edgeseg.core.errors import DataError

    with pytest.raises(DataError, match="the val split of 'folder:.*' has no labelled images"):
        labelled_split(fake, "val")


class _Outlier(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> 1x1 classifier; channel 8 is dead (always 0) and the classifier weights it
    by 1e4: the same function, but the classifier's per-channel int8 weight scales become so coarse that its real
    weights round to 0. Only that layer in float restores the masks."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2, self.cls = nn.Conv2d(3, 9, 3, padding=1), nn.Conv2d(9, 9, 3, padding=1), nn.Conv2d(9, 4, 1)
        with torch.no_grad():
            for c in (self.c1, self.c2):
                c.weight[8].zero_()
                c.bias[8] = -1.0
            self.cls.weight[:, 8] = 1e4

    def forward(self, x):
        return self.cls(torch.relu(self.c2(torch.relu(self.c1(x)))))


def test_mixed_precision_stops_when_the_threshold_holds_and_keeps_ops_float(tmp_path):
    """The one op search every TFLite route uses (ptq/qat/aeq ``--mixed-precision``, the ladder's rung 3) on the
    outlier model: full int8 fails, the classifier alone in float passes, and the search stops there."""
    from edgeseg.core.latency import torch_runner
    from edgeseg.quantize.aeq import search_ops
    from edgeseg.tasks.semantic.parity import thresholds_for
    from exporters import ExportOptions, Normalization
    from exporters.tflite import float_file, float_ops
    from exporters.tflite_aeq import Int8Quantizer

    model = _Outlier().eval()
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(32)]
    held_out = [rng.standard_normal((3, 32, 32)).astype(np.float32) for _ in range(8)]
    masks = [np.zeros((32, 32), np.int64) for _ in held_out]
    path, _ = float_file(model, calib[0], ExportOptions(precision="fp32", work_dir=tmp_path,
                                                        normalization=Normalization()))
    q = Int8Quantizer(path.read_bytes(), calib)
    found, record = search_ops(q, torch_runner(model, 2), (held_out, masks), list("abcd"), thresholds_for("int8"),
                               tmp_path / "search.tflite", 100.0, 4, log=lambda s: None)
    cls = next(o for o in q.ops if o.type == "CONV_2D" and o.macs == 1024 * 36)
    assert found.passed and found.keep == [cls.index]
    tried = record["search"]
    assert tried[0]["float"] == 0 and tried[0]["pixel_agreement"] < 98.0 <= tried[-1]["pixel_agreement"]
    out = tmp_path / "mixed.tflite"
    out.write_bytes(q.quantize(found.keep))
    assert float_ops(out) == ["CONV_2D"]  # really float in the file, and only that one


def test_aeq_keeps_the_op_the_masks_need_in_float_and_counts_macs(tmp_path):
    """ai-edge-quantizer route on the outlier model: full int8 rounds the classifier's real weights to 0 (masks
    break); the same calibration with that one op in float restores them, and the file says so."""
    from edgeseg.core.latency import torch_runner
    from edgeseg.tasks.semantic.parity import compare, thresholds_for
    from exporters import ExportOptions, Normalization
    from exporters.tflite import export, float_ops, load
    from exporters.tflite_aeq import Int8Quantizer

    model = _Outlier().eval()
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(32)]
    held_out = [rng.standard_normal((3, 32, 32)).astype(np.float32) for _ in range(8)]
    masks = [np.zeros((32, 32), np.int64) for _ in held_out]
    fp32 = export(model, calib[0], ExportOptions(precision="fp32", work_dir=tmp_path, normalization=Normalization(),
                                                 class_names=list("abcd")), tmp_path)
    q = Int8Quantizer(fp32.path.read_bytes(), calib)
    assert q.calibration_images == 32
    convs = [o for o in q.ops if o.type == "CONV_2D"]
    # multiply-adds per output pixel x 32x32 pixels: 9*3*3*3, 9*3*3*9, 4*9 (1x1 classifier)
    assert sorted(o.macs for o in convs) == sorted([1024 * 243, 1024 * 729, 1024 * 36])
    cls = next(o for o in convs if o.macs == 1024 * 36)
    assert q.float_macs([cls.index]) == pytest.approx(36 / (243 + 729 + 36))
    reference = torch_runner(model, 2)
    results = {}
    for name, keep in (("int8", []), ("mix", [cls.index])):
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(q.quantize(keep))
        results[name] = compare(reference, load(path), held_out, masks, list("abcd"), thresholds_for("int8"),
                                "tflite", "int8")
        assert float_ops(path) == (["CONV_2D"] if keep else [])  # really float in the file, and only that op
    assert results["int8"].pixel_agreement < 98.0 <= results["mix"].pixel_agreement
    # an op type kept float in every file: all three convolutions, and the search may not pick them again
    every = Int8Quantizer(fp32.path.read_bytes(), calib, float_types=("CONV_2D",))
    path = tmp_path / "convs.tflite"
    path.write_bytes(every.quantize())
    assert float_ops(path) == ["CONV_2D"] * 3 and not [o for o in every.candidates() if o.type == "CONV_2D"]
    # percentile ranges: one outlier pixel per calibration image sets minmax's input range; percentile takes the
    # mean of each image's [0.01, 99.99] % percentiles (computed here by hand) and the file's int8 grid follows
    from ai_edge_litert.interpreter import Interpreter

    spiky = [c.copy() for c in calib[:8]]
    for c in spiky:
        c[0, 1, 5, 7] = 500.0
    nhwc = [c.transpose(0, 2, 3, 1).ravel() for c in spiky]
    lo, hi = np.mean([np.quantile(v, [1e-4, 1 - 1e-4]) for v in nhwc], axis=0)
    interp = Interpreter(model_content=fp32.path.read_bytes())
    inp = interp.get_input_details()[0]
    ranges = {}
    for how in ("minmax", "percentile"):
        qq = Int8Quantizer(fp32.path.read_bytes(), spiky, ranges=how)
        qsv = qq._qsv[inp["name"]]
        ranges[how] = (float(np.ravel(qsv["min"])[0]), float(np.ravel(qsv["max"])[0]))
        data = qq.quantize()
        scale = Interpreter(model_content=data).get_input_details()[0]["quantization"][0]  # the int8 input's grid
        assert scale == pytest.approx((ranges[how][1] - ranges[how][0]) / 255, rel=0.02), how
    assert ranges["minmax"][1] == pytest.approx(500.0)
    # (3,072 values per image: the 99.99th percentile still interpolates into the spike, 347 instead of 500; on a
    # real activation map of 10^5+ values one such pixel falls outside it)
    assert ranges["percentile"] == pytest.approx((lo, hi), rel=1e-5) and hi < 0.75 * ranges["minmax"][1]
    from exporters import ExporterError

    with pytest.raises(ExporterError, match="op 999 is not in the model"):
        q.quantize([999])
    with pytest.raises(ExporterError, match=r"calibration images are \(1, 16, 16, 3\) \(NHWC\), the model takes"):
        Int8Quantizer(fp32.path.read_bytes(), [np.zeros((1, 3, 16, 16), np.float32)])


def test_aeq_through_the_cli_searches_by_the_mask_metric(run, capsys):
    code, s, err = _quantize(run, capsys, "--method", "aeq", "--calibration", "16", "--equalize", "activations")
    assert code == 0, err
    r = s["targets"]["tflite-int8-aeq"]
    assert r["status"] == "passed" and r["pixel_agreement"] >= 98.0 and r["miou_drop"] <= 0.01
    assert r["details"]["tensor_dtypes"].get("int8", 0) > 0 and r["details"]["calibration_images"] == 16
    # the tiny U-Net (depth 3): conv -> BN -> ReLU -> conv inside each of its 4 encoder and 3 decoder blocks, and
    # the last block's into the head; a block's output feeds a skip and a pool, which ends every other chain
    eq = s["equalization"]
    assert eq["mode"] == "activations" and eq["pairs"] == 8 and eq["float_deviation"] <= 1e-5
    assert all(0 < p["scale_min"] <= p["scale_max"] <= 1 for p in eq["equalized"])
    rec = json.loads((run / "export" / "tflite-int8-aeq" / "export.json").read_text())
    assert rec["method"] == "aeq" and rec["details"]["ranges"] == "minmax"
    assert rec["equalization"] == {k: v for k, v in eq.items() if k != "equalized"}
    from exporters import tflite_metadata

    data = (run / "export" / "tflite-int8-aeq" / "model.tflite").read_bytes()
    assert tflite_metadata.edgeseg_info(data)["precision"] == "int8"
    assert tflite_metadata.split_zip(data)[1]["labels.txt"].decode().split("\n")[0] == "background"
    # a gate no mix reaches here (every pixel equal): the search runs, stays within its budgets, records the best
    code, s, err = _quantize(run, capsys, "--method", "aeq", "--calibration", "16", "--mixed-precision",
                             "--min-agreement", "100", "--min-mask-miou", "1", "--max-float-layers", "2")
    m = s["mixed"] if s else json.loads((run / "export" / "quantize-aeq.json").read_text())["mixed"]
    assert m["needed"] and len(m["ranking"]) > 10
    assert m["ranking_images"] == 12  # the tiny run's whole validation split: fewer than RANK_IMAGES (24)
    # the one search: full int8, each op alone (the whole split here), then the walks, the graph order among them
    assert {"full-int8", "sensitivity", "from-input"} <= {t["order"] for t in m["search"]}
    assert all(t["float"] <= 2 and t["float_macs_pct"] <= 10.0 for t in m["search"])
    assert (run / "export" / "tflite-int8-aeq-mixed" / "parity.json").exists()
    assert code == (0 if m["passed"] else 1)
    if code:
        assert "no mix within 10 % float MACs and 2 ops passes on validation" in err


@pytest.mark.parametrize("args,message", [
    (["--method", "aeq", "--targets", "onnx"], "--method aeq runs ai-edge-quantizer, which quantizes TFLite files"),
    (["--method", "aeq", "--ranges", "msee"], "did you mean 'mse'"),
    (["--method", "ptq", "--ranges", "mse"], "--ranges applies to --method aeq"),
    (["--method", "aeq", "--max-float-macs", "0"], "--max-float-macs is a percentage in (0, 100], got 0.0"),
    (["--method", "aeq", "--float-ops", "HARD_SWISHH"], "--float-ops: unknown TFLite op type(s) HARD_SWISHH"),
    (["--method", "accuracy", "--targets", "onnx", "--equalize", "weights"],
     "--equalize applies to --method ptq, qat, aeq and pt2e"),
    (["--method", "aeq", "--equalize", "weight"], "did you mean 'weights'"),
    (["--method", "pt2e", "--targets", "tflite,coreml"], "--method pt2e converts the PT2E graph with litert-torch, "
                                                         "which writes TFLite; it cannot produce coreml"),
    (["--method", "pt2e", "--epochs", "-1"], "--epochs must be 0 (post-training) or more (QAT) for --method pt2e"),
])
def test_aeq_and_pt2e_bad_inputs(run, capsys, args, message):
    code, _, err = _quantize(run, capsys, *args)
    assert code == 2 and message in err, err


def test_pt2e_qat_file_is_the_fine_tuned_fake_quant_model(run, capsys):
    """QAT whose grid lands in the file: each TFLite file computes what its fine-tuned fake-quantized PyTorch graph
    computes. Tolerance: the only difference left is the int8 kernels' own rounding (requantization, int8
    hard-swish/resize) against PyTorch's float simulation of the same grid; the issue's bar is 0.1 point of
    agreement with the float model, and the file agrees with the fake-quant graph on >= 99.8 % of pixels
    (measured 99.98 % on this model). A gate no mix reaches (every pixel equal) also runs the mask-metric search:
    it stays within its budgets and its file is written, checked and keeps the chosen tensors in float."""
    code, _, err = _quantize(run, capsys, "--method", "pt2e", "--calibration", "32", "--epochs", "1",
                             "--mixed-precision", "--min-agreement", "100", "--min-mask-miou", "1",
                             "--max-float-layers", "2")
    s = json.loads((run / "export" / "quantize-pt2e.json").read_text())
    assert code == 1 and "tflite-int8-pt2e-mixed: no mix within 10 % float MACs and 2 tensors passes" in err, err
    full, mixed = s["targets"]["tflite-int8-pt2e"], s["targets"]["tflite-int8-pt2e-mixed"]
    for r in (full, mixed):
        d = r["details"]
        assert r["pixel_agreement"] >= 98.0 and r["mask_miou"] >= 0.95
        assert abs(d["fake_quant"]["pixel_agreement"] - r["pixel_agreement"]) <= 0.1
        assert abs(d["file_vs_fake_quant"]["agreement_gap_points"]) <= 0.1
        assert d["file_vs_fake_quant"]["pixel_agreement"] >= 99.8
        # int8 input (the first convolution's input quantizer), int8 convolutions
        assert d["quantization"] == "QAT" and d["epochs"] == 1 and d["calibration_images"] == 32
        assert d["int8_ops"].get("CONV_2D", 0) > 0
    assert full["details"]["input_dtype"] == "int8" and "CONV_2D" not in full["details"]["float_ops"]
    m = s["mixed"]
    assert m["needed"] and not m["passed"] and 1 <= len(m["float_tensors"]) <= 2
    assert m["float_macs_pct"] <= 10.0 and len(m["ranking"]) > 10
    assert all(t["float_macs_pct"] <= 10.0 for t in m["search"])
    # what the search left unquantized is unquantized in the file. Which tensors it picks depends on the thread
    # count's rounding, and so does how that shows: a tensor a convolution reads or writes makes ops float (CONV_2D
    # at one thread), a requantization (a QUANTIZE between two int8 ops: before a concatenation, after a pooling)
    # is simply gone (two QUANTIZE ops fewer and no float op, measured serially at two threads). Either way each
    # chosen tensor leaves a float op or one QUANTIZE fewer.
    full_ops, mixed_ops = full["details"], mixed["details"]
    more_float = sum(mixed_ops["float_ops"].values()) - sum(full_ops["float_ops"].values())
    fewer_requant = full_ops["int8_ops"].get("QUANTIZE", 0) - mixed_ops["int8_ops"].get("QUANTIZE", 0)
    assert more_float > 0 or fewer_requant == len(m["float_tensors"]), (full_ops, mixed_ops, m["float_tensors"])
    # the file's own float share of the multiply-adds, recorded beside the search's estimate (measured apart: 0.313 %
    # estimated, 6.766 % in the file at one thread; 3.379 / 0 at two): none in the full int8 file, float exactly
    # where a convolution is, and within the budget, which is gated on the file
    assert full_ops["float_macs_pct_in_file"] == 0.0
    assert (mixed_ops["float_macs_pct_in_file"] > 0) == ("CONV_2D" in mixed_ops["float_ops"])
    assert m["float_macs_pct_in_file"] == mixed_ops["float_macs_pct_in_file"] <= 10.0, m
    assert mixed["details"]["mixed_precision"]["float_tensors"] == m["float_tensors"]
    assert any("QAT loss per epoch" in n for n in s["notes"])
    rec = json.loads((run / "export" / "tflite-int8-pt2e" / "export.json").read_text())
    assert rec["method"] == "pt2e" and rec["target"] == "tflite" and rec["precision"] == "int8"
    from exporters import tflite_metadata

    data = (run / "export" / "tflite-int8-pt2e-mixed" / "model.tflite").read_bytes()
    assert tflite_metadata.edgeseg_info(data)["precision"] == "int8"
