"""Runs written before the seam layout keep working: files made by edgeseg at commit 26ee006 (the tip before it),
committed in tests/fixtures/tip-26ee006/.

semantic/: `edgeseg train -o R --model unet --model-opt base=4 --model-opt depth=2 --data
"synthetic?train=16&val=4&test=4" --image-size 32 --epochs 1 --batch-size 4 --precise-bn-batches 1 --seed 0`, then
`export R --target onnx,tflite --precision fp32`, `check` the same, `report R --runs 2 --warmup 1`.
instance/: `edgeseg maskrcnn train -o R --data "synthetic?train=8&test=4" --size 64 --epochs 1 --batch-size 4`,
`maskrcnn export R --target onnx --limit 2 --score-threshold 0.05`: its records only (metrics.json, export.json,
parity.json); its 76 MB maskrcnn.pt and 81 MB model.onnx are not committed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgeseg.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "tip-26ee006"


@pytest.fixture()
def old_run(tmp_path) -> Path:
    run = tmp_path / "semantic"
    shutil.copytree(FIXTURES / "semantic", run)
    return run


@pytest.mark.slow
def test_an_old_semantic_run_checks_exports_reports_and_bundles(old_run, tmp_path, capsys):
    old = {d: json.loads((old_run / "export" / d / "parity.json").read_text()) for d in ("onnx-fp32", "tflite-fp32")}
    # its exports, checked again by this edgeseg: the same figures as the old records
    assert main(["check", str(old_run), "--target", "onnx,tflite", "--precision", "fp32", "--json", "-q"]) == 0
    new = {f"{r['target']}-{r['precision']}": r for r in json.loads(capsys.readouterr().out)}
    for name, rec in old.items():
        assert new[name]["status"] == rec["status"] == "passed"
        assert new[name]["images"] == rec["images"] == 4
        assert new[name]["pixel_agreement"] == pytest.approx(rec["pixel_agreement"], abs=0.01)
        assert new[name]["reference_miou"] == pytest.approx(rec["reference_miou"], abs=1e-6)
    # its checkpoint exports again (a new ONNX file checked like any other)
    assert main(["export", str(old_run), "--target", "onnx", "--json", "-q"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["checkpoint_digest"] == json.loads((FIXTURES / "semantic/export/onnx-fp32/export.json").read_text()
                                                  )["checkpoint_digest"]
    # the report, gated against the report.json the old edgeseg wrote
    assert main(["report", str(old_run), "--runs", "2", "--warmup", "1", "--baseline",
                 str(FIXTURES / "semantic" / "report.json"), "--json", "-q"]) in (0, 1)  # latency may regress
    rep = json.loads(capsys.readouterr().out)
    rows = {r["export"]: r for r in rep["baseline"]["rows"]}
    assert set(rows) >= {"onnx-fp32", "tflite-fp32"}
    assert rows["tflite-fp32"]["agreement"] == [100.0, 100.0] and not any("agreement" in g or "size" in g for r in
                                                                          rows.values() for g in r["regressions"])
    # the bundle takes the old TFLite export and its old parity record
    dist = tmp_path / "dist"
    assert main(["bundle", str(old_run), "-o", str(dist), "--coreml", "none", "--json", "-q"]) == 0
    man = json.loads(capsys.readouterr().out)
    assert man["platforms"]["android"]["export"] == "tflite-fp32"
    assert man["platforms"]["android"]["parity"]["pixel_agreement"] == 100.0
    assert main(["bundle", "--verify", str(dist), "-q"]) == 0


def test_old_instance_records_read():
    """An old Mask R-CNN run's training record and export records read as the report and bundle read them."""
    from edgeseg.tasks.instance.run import training_record
    from edgeseg.tasks.instance.task import InstanceTask

    run = FIXTURES / "instance"
    assert training_record(run)["steps"] == 2
    (entry,) = InstanceTask().exports(run, "onnx")
    assert entry.name == "maskrcnn-onnx-fp32" and entry.status == "passed"
    assert entry.parity["matched"] == entry.parity["reference_detections"] == 40
    assert entry.record["details"]["graph"]["detections"] == 20 and entry.record["score_threshold"] == 0.05
    evidence = InstanceTask().evidence(entry)
    assert evidence["status"] == "passed" and evidence["score_threshold"] == 0.05
