"""The command line: end to end on a tiny run, and every bad input's one-line error and exit code."""

import json
import subprocess
import sys

import pytest

from edgeseg.cli import main


def run_cli(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "edgeseg", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("cmd", ["train", "export", "check", "report", "bench", "bundle", "quickstart", "models",
                                 "data"])
def test_help_for_every_command(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: edgeseg " + cmd in capsys.readouterr().out


def test_unknown_target_and_precision_suggest(tiny_run, capsys):
    assert main(["export", str(tiny_run), "--target", "tflit"]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'tflit' (did you mean 'tflite'?)" in err and "Traceback" not in err
    assert main(["export", str(tiny_run), "--target", "coreml", "--precision", "int9"]) == 2
    assert "unknown precision for target 'coreml' 'int9' (did you mean 'int8'?)" in capsys.readouterr().err


def test_bad_inputs_give_one_line_and_exit_codes(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["train", "-o", str(f), "--epochs", "1"]) == 2
    assert f"run directory '{f}' is a file" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "nope"), "--target", "tflite"]) == 1
    assert "no checkpoint at" in capsys.readouterr().err
    assert main(["train", "-o", str(tmp_path / "r"), "--data", f"folder:{tmp_path}/missing"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
    assert main(["train", "-o", str(tmp_path / "r"), "--model", "unte"]) == 2
    assert "did you mean 'unet'" in capsys.readouterr().err


def test_check_before_export_says_what_to_run(tiny_run, capsys):
    assert main(["check", str(tiny_run), "--target", "onnx"]) == 2
    assert f"run: edgeseg export {tiny_run} --target onnx --precision fp32" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_export_check_report(tiny_run, capsys, monkeypatch):
    """export -> check -> report through the CLI, asserting the parity figures it prints and writes."""
    monkeypatch.chdir(tiny_run.parent)  # a relative run path, as users type it
    tiny_run = type(tiny_run)(tiny_run.name)
    assert main(["export", str(tiny_run), "--target", "tflite", "--precision", "int8", "-q"]) == 0
    # a threshold no percentage can reach is a usage error that names the flag
    assert main(["check", str(tiny_run), "--target", "tflite", "--precision", "int8",
                 "--min-agreement", "100.01", "-q"]) == 2
    assert "--min-agreement must be between 0 and 100, got 100.01" in capsys.readouterr().err
    assert main(["check", str(tiny_run), "--target", "tflite", "--precision", "int8", "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["status"] == "passed" and res["images"] == 12
    assert res["pixel_agreement"] >= 98.0 and res["mask_miou"] >= 0.9
    assert abs(res["reference_miou"] - res["exported_miou"]) < 0.05
    assert res["miou_drop"] == pytest.approx(res["reference_miou"] - res["exported_miou"])
    assert res["thresholds"]["max_miou_drop"] == 0.01
    # a threshold the int8 model misses fails with exit code 1 and says why
    assert res["pixel_agreement"] < 100
    assert main(["check", str(tiny_run), "--target", "tflite", "--precision", "int8",
                 "--min-agreement", "100", "-q"]) == 1
    assert "FAILED: pixel agreement" in capsys.readouterr().out
    # the task gate: asking that the export be better than PyTorch by 100 points fails, naming the drop
    assert main(["check", str(tiny_run), "--target", "tflite", "--precision", "int8", "--max-miou-drop", "0",
                 "--min-agreement", "0", "--min-mask-miou", "0", "--json", "-q"]) == (1 if res["miou_drop"] > 0 else 0)
    capsys.readouterr()
    assert main(["check", str(tiny_run), "--target", "tflite", "--precision", "int8", "--max-miou-drop", "5"]) == 2
    assert "--max-miou-drop must be between 0 and 1, got 5.0 (an absolute IoU drop: 0.01 is one point)" \
        in capsys.readouterr().err
    # the per-class gate: the worst class's drop is the record's; a limit below it fails naming the class
    worst = res["worst_class"]
    assert res["thresholds"]["max_class_drop"] == 0.02 and worst["name"] in res["iou_change"]
    assert worst["change"] == min(v for v in res["iou_change"].values() if v is not None)
    assert worst["change"] == pytest.approx(worst["exported_iou"] - worst["reference_iou"])
    if worst["change"] < 0:
        assert main(["check", str(tiny_run), "--target", "tflite", "--precision", "int8", "--max-class-drop",
                     str(-worst["change"] * 0.99), "-q"]) == 1
        assert f"FAILED: class IoU drop {-worst['change']:.4f} on '{worst['name']}'" in capsys.readouterr().out
    assert main(["check", str(tiny_run), "--target", "tflite", "--precision", "int8", "--max-class-drop",
                 str(max(0.0, -worst["change"]) + 1e-9), "--json", "-q"]) == 0
    capsys.readouterr()
    assert main(["check", str(tiny_run), "--target", "tflite", "--precision", "int8", "-q"]) == 0
    assert "drop " in capsys.readouterr().out
    saved = json.loads((tiny_run / "export" / "tflite-int8" / "parity.json").read_text())
    assert saved["pixel_agreement"] == res["pixel_agreement"] and saved["schema"] == "edgeseg.parity/1"

    # Core ML: checked by the Core ML runtime on macOS, by reference execution of the saved program elsewhere
    assert main(["export", str(tiny_run), "--target", "coreml", "-q"]) == 0
    import coremltools as ct

    meta = ct.models.MLModel(str(tiny_run / "export" / "coreml-fp16" / "model.mlpackage"),
                             skip_model_load=True).user_defined_metadata
    assert json.loads(meta["edgeseg_preprocess"])["height"] == 64 and meta["edgeseg_model"] == "unet"
    assert [c["name"] for c in json.loads(meta["edgeseg_classes"])][-1] == "star"
    code = main(["check", str(tiny_run), "--target", "coreml", "-q"])
    out = capsys.readouterr().out
    import platform

    if platform.system() != "Darwin":
        assert code == 0 and "PASSED" in out and "reference execution of the Core ML program" in out
        # the runtime's compute units exist only on macOS: asked for here, the check is not verified
        code = main(["check", str(tiny_run), "--target", "coreml", "--compute-units", "ALL", "-q"])
        out = capsys.readouterr().out
        assert code == 3 and "NOT-VERIFIED" in out and "needs macOS" in out

    assert main(["report", str(tiny_run), "--runs", "20", "--json", "-q"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["schema"] == "edgeseg.report/1"
    rows = {(r["target"], r["precision"]): r for r in rep["results"]}
    tfl = rows[("tflite", "int8")]
    assert tfl["latency"]["runs"] == 20 and tfl["latency"]["median_ms"] > 0
    assert "XNNPACK" in tfl["latency"]["runtime"] and tfl["parity"]["status"] == "passed"
    assert rows[("pytorch", "fp32")]["latency"]["median_ms"] > 0
    md = (tiny_run / "report.md").read_text()
    assert "| tflite | int8 |" in md and "PASS" in md
    if platform.system() != "Darwin":
        assert "not measured" in md and rows[("coreml", "fp16")]["parity"]["status"] == "not-verified"

    # --max-miou-drop: a budget line per export; what parity could not measure is not verified, never passed
    assert main(["report", str(tiny_run), "--runs", "2", "--warmup", "0", "--max-miou-drop", "1", "--json",
                 "-q"]) == (0 if platform.system() == "Darwin" else 3)
    rep = json.loads(capsys.readouterr().out)
    lines = {b["export"]: b for b in rep["budget"]["lines"]}
    assert rep["budget"]["file"] == "--max-miou-drop" and lines["tflite-int8"]["limit"] == "max_miou_drop"
    assert lines["tflite-int8"]["status"] == "passed" and lines["tflite-int8"]["budget"] == 1.0
    assert lines["tflite-int8"]["value"] == pytest.approx(res["miou_drop"])


def test_models_lists_params_and_macs(capsys):
    assert main(["models", "--size", "64", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) >= {"unet", "lraspp"}
    assert rows["lraspp"]["params"] == 3218818  # torchvision LR-ASPP MobileNetV3-Large, 5 classes
    assert rows["unet"]["macs"] > rows["lraspp"]["macs"]


def test_cli_imports_no_heavy_toolchain_for_help():
    code, out, _ = run_cli("--help")
    assert code == 0 and "exit codes:" in out
    probe = ("import sys, edgeseg.cli; edgeseg.cli.parser(); "
             "print(sorted(m for m in ('torch', 'tensorflow', 'coremltools', 'onnx2tf') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"


def test_module_entry_point():
    code, out, err = run_cli("--help")
    assert code == 0 and "exit codes:" in out
    code, out, err = run_cli("data", "show", "synthetic?train=4&val=2&test=2", "--json")
    assert code == 0 and json.loads(out)["splits"]["train"]["images"] == 4


def test_coreml_argmax_export_and_check_through_the_cli(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
    assert main(["export", str(run), "--target", "coreml", "--precision", "w8a8", "--output", "argmax",
                 "--calibration", "8", "--json", "-q"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["path"] == "export/coreml-w8a8-argmax/model.mlpackage"
    assert rec["details"]["deployment_target"] == "iOS17" and rec["details"]["output"] == "argmax"
    code = main(["check", str(run), "--target", "coreml", "--precision", "w8a8", "--output", "argmax", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert res["max_abs_logit_diff"] is None and res["pixel_agreement"] > 90
    assert code == (0 if res["status"] == "passed" else 1)
    # TFLite int8 with the in-graph argmax: a uint8 class map, checked against PyTorch's masks
    assert main(["export", str(run), "--target", "tflite", "--precision", "int8", "--output", "argmax", "-q"]) == 0
    code = main(["check", str(run), "--target", "tflite", "--precision", "int8", "--output", "argmax", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["status"] == "passed" and res["pixel_agreement"] >= 98
    assert main(["export", str(run), "--target", "tflite", "--input", "multiarray"]) == 2
    assert "--input multiarray does not apply to --target tflite; it takes image or pixels" in capsys.readouterr().err


def test_export_pairs_expand_lists_and_all():
    from exporters import TARGETS

    from edgeseg.core.errors import UsageError
    from edgeseg.core.pairs import export_pairs

    assert export_pairs("tflite,coreml", "fp32,fp16,int8") == (
        [("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"), ("coreml", "fp32"), ("coreml", "fp16"),
         ("coreml", "int8")], [])
    pairs, skipped = export_pairs("onnx,tflite", "fp16")
    assert pairs == [("tflite", "fp16")] and skipped == ["onnx has no fp16 (it has fp32, int8): skipped"]
    assert export_pairs("tflite,onnx", None) == ([("tflite", "fp32"), ("onnx", "fp32")], [])
    assert export_pairs("onnx", "all")[0] == [("onnx", p) for p in TARGETS["onnx"].precisions]
    assert len(export_pairs("all", "all")[0]) == sum(len(t.precisions) for t in TARGETS.values())
    assert export_pairs("tflite,coreml:fp16", "all") == (
        [("tflite", p) for p in TARGETS["tflite"].precisions] + [("coreml", "fp16")], [])
    assert export_pairs("coreml:fp16,onnx:int8", None) == ([("coreml", "fp16"), ("onnx", "int8")], [])
    with pytest.raises(UsageError, match=r"unknown precision for target 'coreml' 'fp61' \(did you mean 'fp16'\?\)"):
        export_pairs("tflite,coreml:fp61", "all")
    with pytest.raises(UsageError, match=r"unknown precision for target 'onnx' 'fp16' \(did you mean 'fp32'\?\)"):
        export_pairs("onnx", "fp16")
    with pytest.raises(UsageError, match=r"unknown target 'tflit' \(did you mean 'tflite'\?\)"):
        export_pairs("coreml,tflit", "fp16")


@pytest.mark.slow
def test_several_targets_and_precisions_export_and_check_in_one_call(tiny_run, tmp_path, capsys):
    """One export call writes every pair (a precision a target lacks is a note), one check call checks them
    all on test images read once, with the same figures as one check per export."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "report.*"))
    assert main(["export", str(run), "--target", "onnx,tflite", "--precision", "fp32,fp16", "--json"]) == 0
    out, err = capsys.readouterr()
    recs = json.loads(out)
    assert [(r["target"], r["precision"]) for r in recs] == [("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "fp16")]
    assert "note: onnx has no fp16 (it has fp32, int8): skipped" in err and "3 exports in" in err
    assert main(["check", str(run), "--target", "onnx,tflite", "--precision", "fp32,fp16", "--json"]) == 0
    together = json.loads(capsys.readouterr().out)
    assert [(p["target"], p["precision"], p["status"]) for p in together] == [
        ("onnx", "fp32", "passed"), ("tflite", "fp32", "passed"), ("tflite", "fp16", "passed")]
    for p in together:
        assert main(["check", str(run), "--target", p["target"], "--precision", p["precision"], "--json"]) == 0
        alone = json.loads(capsys.readouterr().out)
        for k in ("images", "pixel_agreement", "mask_miou", "max_abs_logit_diff", "reference_miou", "exported_miou"):
            assert alone[k] == p[k], (p["target"], p["precision"], k)
