"""The default int8 (`export --precision int8`): the ladder's candidates, its choice, its record and its last rung."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeseg.cli import main
from edgeseg.quantize.ladder import LATENCY_TIE, Tried, choose
from edgeseg.tasks.semantic.parity import ParityResult


def _tried(name: str, passed: bool, miou: float, ms: float, rung: int = 1) -> Tried:
    p = ParityResult("tflite", "int8", "passed" if passed else "failed", pixel_agreement=99.0, mask_miou=miou)
    return Tried(name, rung, name, b"", p, ms, 1.0)


def test_choose_fastest_passing_unless_better_masks_are_within_the_tie():
    slow_best = _tried("aeq-slow", True, 0.99, 8.0)
    fast = _tried("aeq", True, 0.97, 4.0)
    failing_fastest = _tried("aeq-plain", False, 0.99, 1.0)
    chosen, why = choose([slow_best, fast, failing_fastest])
    assert chosen is fast and why.endswith("; the fastest of the files that pass (aeq-slow, aeq)")
    # within the tie of the fastest, the better masks win: noise in a timing does not pick the file
    near = _tried("aeq-eq", True, 0.98, 4.0 * (1 + LATENCY_TIE) - 1e-6)
    chosen, why = choose([slow_best, fast, near])
    assert chosen is near and why.endswith("the best masks of the passing files within 15% of the fastest (aeq, aeq-eq)")
    assert choose([failing_fastest])[0] is None


@pytest.fixture(scope="module")
def laddered(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("ladder") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "report.*"))
    return run


def test_default_int8_is_the_ladders_measured_choice(laddered, capsys):
    from exporters.tflite import tensor_types

    assert main(["export", str(laddered), "--target", "tflite", "--precision", "int8", "--json", "-q"]) == 0
    rec = json.loads(capsys.readouterr().out)
    lad = rec["details"]["ladder"]
    # U-Net has conv -> BN -> ReLU -> conv pairs: the equalized and the plain model, each with both range rules
    names = ["aeq-global", "aeq-minmax", "aeq-plain-global", "aeq-plain-minmax"]
    assert [t["name"] for t in lad["tried"]] == names
    assert all(t["rung"] == 1 for t in lad["tried"]) and lad["validation_images"] == 12
    assert [t["equalized_pairs"] > 0 for t in lad["tried"]] == [True, True, False, False]
    assert "global min/max" in lad["tried"][0]["what"] and "moving-average" in lad["tried"][1]["what"]
    # equalization and ranges change weights and scales, not kernels: every file takes the first one's time
    assert all(t["timed_as"] == "aeq-global" and t["latency_ms"] == lad["tried"][0]["latency_ms"]
               for t in lad["tried"][1:])
    assert lad["thresholds"]["max_class_drop"] == 0.02 and lad["rung2"].startswith("learned rounding")
    for t in lad["tried"]:
        v = t["validation"]
        assert 0 < v["pixel_agreement"] <= 100 and 0 < v["mask_miou"] <= 1 and t["latency_ms"] > 0
        assert v["passed"] == t["passed"] == (not t["failures"])
    # the record's own figures give the same choice (fastest passing; better masks within the tie)
    again = [_tried(t["name"], t["passed"], t["validation"]["mask_miou"], t["latency_ms"]) for t in lad["tried"]]
    chosen, _ = choose(again)
    assert chosen is not None and lad["chosen"] == chosen.name and lad["rung"] == 1
    # the file written is the chosen candidate's, and it is what its record says
    final = laddered / rec["path"]
    scratch = next((laddered / "export" / ".cache").glob("*/ladder-image")) / f"{lad['chosen']}.tflite"
    assert final.read_bytes() == scratch.read_bytes()
    types = tensor_types(final)
    assert rec["details"]["input_dtype"] == types["input_dtype"]
    assert types["input_dtype"] == types["output_dtype"] == "int8"  # every candidate: int8 in and out
    assert rec["details"]["converter"] == next(t["what"] for t in lad["tried"] if t["name"] == lad["chosen"])
    # the check on the test split gates it like any export; report.md says what the ladder did
    assert main(["check", str(laddered), "--target", "tflite", "--precision", "int8", "-q"]) == 0
    assert main(["report", str(laddered), "--runs", "2", "--warmup", "0", "-q"]) == 0
    md = (laddered / "report.md").read_text()
    assert f"- tflite-int8: the int8 ladder kept **{lad['chosen']}**" in md
    # the target's own int8 by name: its file alone, int8 in and out, no ladder
    capsys.readouterr()
    assert main(["export", str(laddered), "--target", "tflite", "--precision", "int8", "--int8-route", "direct",
                 "--json", "-q"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert "ladder" not in direct["details"] and direct["details"]["input_dtype"] == "int8"
    assert direct["details"]["converter"] == "onnx2tf (flatbuffer_direct) + ai-edge-quantizer"
    # the checked file was replaced: its parity no longer vouches for anything (report: not checked, bundle: refused)
    assert not (laddered / "export" / "tflite-int8" / "parity.json").exists()
    with pytest.raises(SystemExit) as bad:  # argparse's own refusal, exit 2
        main(["export", str(laddered), "--target", "tflite", "--int8-route", "fastest", "-q"])
    assert bad.value.code == 2 and "--int8-route: invalid choice: 'fastest'" in capsys.readouterr().err


def test_ladder_searches_mixed_precision_when_no_full_int8_passes(laddered, monkeypatch):
    """A gate no full-int8 file meets (100 % agreement): rung 3 searches float ops from the ai-edge-quantizer file;
    nothing reaches 100 %, so the closest file is kept and the record says so. The model here cannot be equalized
    (as one torch.fx cannot trace): the ladder goes on without that candidate and says why."""
    import edgeseg.quantize.equalize as equalize
    import edgeseg.quantize.ladder as ladder
    from edgeseg.core.errors import UsageError
    from edgeseg.tasks.semantic.parity import thresholds_for

    def untraceable(*args, **kwargs):
        raise UsageError("--equalize: Net cannot be traced by torch.fx to find its convolution pairs")

    monkeypatch.setattr(ladder, "thresholds_for", lambda p: {**thresholds_for(p), "min_agreement": 100.0})
    monkeypatch.setattr(equalize, "equalize", untraceable)
    rec = ladder.export_int8(laddered, "pixels", log=lambda s: None, max_float_macs=100.0, max_steps=2)
    lad = rec["details"]["ladder"]
    rungs = {t["name"]: t for t in lad["tried"]}
    base = max(("aeq-global", "aeq-minmax"), key=lambda n: (rungs[n]["validation"]["mask_miou"],
                                                            rungs[n]["validation"]["pixel_agreement"]))
    assert list(rungs) == ["aeq-global", "aeq-minmax", f"{base}-mixed"] and not any(t["passed"] for t in lad["tried"])
    assert rungs["aeq-global"]["equalized_pairs"] == 0 and "cannot be traced" in rungs["aeq-global"]["not_equalized"]
    mixed = rungs[f"{base}-mixed"]
    assert mixed["rung"] == 3 and 1 <= len(mixed["float_ops"]) <= 2 and mixed["float_macs_pct"] is not None
    assert lad["mixed_search"]["needed"] and not lad["mixed_search"]["passed"]
    closest = max(lad["tried"], key=lambda t: (t["validation"]["mask_miou"], t["validation"]["pixel_agreement"]))
    assert lad["chosen"] == closest["name"] and lad["why"].startswith("no rung passes on the validation split")
    assert rec["path"] == "export/tflite-int8-pixels/model.tflite" and rec["details"]["input"] == "pixels"
    # pixel input as camera code and MediaPipe feed it: uint8 bytes, scale 1, zero point 0; MediaPipe's
    # ImageSegmenter (the app's client) reads the file and gives LiteRT's masks
    assert rec["details"]["input_dtype"] == "uint8"
    assert rec["details"]["input_quantization"] == {"scale": 1.0, "zero_point": 0}
    import numpy as np

    from exporters import TARGETS
    from exporters.tflite import to_pixels
    from edgeseg.steps.bundle.clients import mediapipe_segment

    from edgeseg.train.checkpoint import load_checkpoint

    pre = load_checkpoint(laddered).preprocess
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    path = laddered / rec["path"]
    y = TARGETS["tflite"].load(path)(x).argmax(1)
    pixels = to_pixels(x, pre.mean, pre.std).astype(np.uint8).transpose(0, 2, 3, 1)
    same = [(mediapipe_segment(path, pixels[i])[0] == y[i]).mean() for i in range(2)]
    assert 100 * np.mean(same) >= 99.9, same
