"""Budgets and baselines gate an app's CI: figures, statuses and exit codes."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeseg.cli import main


@pytest.fixture(scope="module")
def reported(tiny_run, tmp_path_factory):
    """A copy of the tiny run with a TFLite fp32 export, checked, and a plain report."""
    from edgeseg.tasks.semantic.run import check_run, export_run
    from edgeseg.steps.report.build import build_report

    run = tmp_path_factory.mktemp("budget") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "report.*"))
    export_run(run, "tflite", "fp32", log=lambda s: None)
    check_run(run, "tflite", "fp32", log=lambda s: None)
    build_report(run, runs=3, warmup=1, log=lambda s: None)
    shutil.copy(run / "report.json", run.parent / "baseline.json")
    return run


def _report(run, *extra, capsys):
    code = main(["report", str(run), "--runs", "3", "--warmup", "1", "--json", "-q", *map(str, extra)])
    return code, json.loads(capsys.readouterr().out)


def test_budget_pass_fail_and_not_verified(reported, tmp_path, capsys):
    size = (reported / "export" / "tflite-fp32" / "model.tflite").stat().st_size / 1e6
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"defaults:\n  min_agreement: 99\nexports:\n  tflite-fp32:\n    max_size_mb: {size + 0.01:.3f}\n"
                  f"    max_latency_ms: 10000\n    max_miou_drop: 0.01\n    max_class_drop: 0.02\n")
    code, rep = _report(reported, "--budget", ok, capsys=capsys)
    assert code == 0 and rep["budget"]["status"] == "passed" and rep["status"] == "passed"
    got = {b["limit"]: b for b in rep["budget"]["lines"]}
    assert got["max_size_mb"]["value"] == pytest.approx(size) and got["min_agreement"]["value"] >= 99.9
    change = json.loads((reported / "export" / "tflite-fp32" / "parity.json").read_text())["iou_change"]
    assert got["max_class_drop"]["value"] == max(0.0, -min(v for v in change.values() if v is not None))
    tight = tmp_path / "tight.yaml"
    tight.write_text(f"exports:\n  tflite-fp32:\n    max_size_mb: {size / 2:.3f}\n")
    code, rep = _report(reported, "--budget", tight, capsys=capsys)
    assert code == 1 and rep["budget"]["lines"][0]["status"] == "failed"
    assert "| tflite-fp32 | max_size_mb |" in (reported / "report.md").read_text()


def test_budget_on_an_unmeasured_figure_is_not_verified(reported, tmp_path, capsys):
    from edgeseg.tasks.semantic.run import export_run

    export_run(reported, "coreml", "fp16", log=lambda s: None)  # exported, never checked
    b = tmp_path / "b.yaml"
    b.write_text("exports:\n  coreml-fp16:\n    min_agreement: 98\n")
    code, rep = _report(reported, "--budget", b, capsys=capsys)
    assert code == 3 and rep["budget"]["lines"][0]["status"] == "not-verified"
    assert "edgeseg check" in rep["budget"]["lines"][0]["reason"]
    shutil.rmtree(reported / "export" / "coreml-fp16")


def test_baseline_diff_and_regression(reported, tmp_path, capsys):
    base = json.loads((reported.parent / "baseline.json").read_text())
    code, rep = _report(reported, "--baseline", reported.parent / "baseline.json", capsys=capsys)
    row = next(d for d in rep["baseline"]["rows"] if d["export"] == "tflite-fp32")
    assert row["size_mb"][0] == row["size_mb"][1] and row["agreement"][0] == row["agreement"][1]
    # a baseline whose model was half the size: the size regression fails the report
    for r in base["results"]:
        r["size_bytes"] //= 2
    worse = tmp_path / "small.json"
    worse.write_text(json.dumps(base))
    code, rep = _report(reported, "--baseline", worse, capsys=capsys)
    assert code == 1 and any("size" in x for d in rep["baseline"]["rows"] for x in d["regressions"])


def test_class_drop_budget_line_hand_computed():
    """The budget's max_class_drop reads the class that fell most; a class that got better is no drop."""
    from edgeseg.steps.report.budget import check_budget

    def row(name, change):
        return {"name": name, "target": "tflite", "size_bytes": 1, "latency": {},
                "parity": {"status": "passed", "pixel_agreement": 99.0, "reference_miou": 0.5, "exported_miou": 0.5,
                           "iou_change": change}}

    report = {"results": [row("tflite-int8", {"road": -0.002, "sign": -0.035, "sky": 0.01, "pole": None}),
                          row("tflite-fp32", {"road": 0.0, "sky": 0.001}),
                          row("coreml-fp16", {})]}
    lines = check_budget(report, {"defaults": {"max_class_drop": 0.02}})
    by = {b["export"]: b for b in lines}
    assert by["tflite-int8"]["value"] == pytest.approx(0.035) and by["tflite-int8"]["status"] == "failed"
    assert by["tflite-fp32"]["value"] == 0.0 and by["tflite-fp32"]["status"] == "passed"
    assert by["coreml-fp16"]["status"] == "not-verified" and "no class IoU" in by["coreml-fp16"]["reason"]


def test_drop_flags_make_a_budget(reported, capsys):
    code, rep = _report(reported, "--max-class-drop", "0.02", "--max-miou-drop", "0.01", capsys=capsys)
    assert code == 0 and rep["budget"]["file"] == "--max-miou-drop --max-class-drop"
    assert {b["limit"] for b in rep["budget"]["lines"]} == {"max_miou_drop", "max_class_drop"}
    assert main(["report", str(reported), "--max-class-drop", "2", "-q"]) == 2
    assert "--max-class-drop must be between 0 and 1, got 2.0" in capsys.readouterr().err


@pytest.mark.parametrize("content,msg", [
    ("exports:\n  tflite-fp32:\n    max_sise_mb: 1\n", "unknown limit 'max_sise_mb' \\(did you mean 'max_size_mb'\\?\\)"),
    ("limits: {}\n", "unknown key 'limits'"),
    ("exports:\n  tflite-int9:\n    max_size_mb: 1\n", "names export 'tflite-int9', which this run does not have"),
    ("exports:\n  tflite-fp32:\n    max_size_mb: big\n", "'tflite-fp32.max_size_mb' must be a finite number >= 0"),
    ("- 1\n", "--budget '.*b.yaml' must hold a mapping of keys to values"),
    ("exports: [\n", "--budget '.*b.yaml' is not valid YAML"),
])
def test_bad_budget_files(reported, tmp_path, capsys, content, msg):
    b = tmp_path / "b.yaml"
    b.write_text(content)
    assert main(["report", str(reported), "--budget", str(b), "-q"]) == 2
    assert __import__("re").search(msg, capsys.readouterr().err)


def test_bad_baseline_and_run_without_exports(reported, tmp_path, tiny_run, capsys):
    other = tmp_path / "old.json"
    other.write_text(json.dumps({"schema": "edgeseg.report/0", "results": []}))
    assert main(["report", str(reported), "--baseline", str(other), "-q"]) == 2
    assert "has schema 'edgeseg.report/0', not 'edgeseg.report/1'" in capsys.readouterr().err
    bare = tmp_path / "bare"
    shutil.copytree(tiny_run, bare, ignore=shutil.ignore_patterns("export", "report.*"))
    assert main(["report", str(bare), "-q"]) == 2
    assert "has no exports to report on" in capsys.readouterr().err


def test_report_html_is_self_contained_with_plots_and_overlays(reported):
    from html.parser import HTMLParser

    page = (reported / "report.html").read_text()

    class Images(HTMLParser):
        def __init__(self):
            super().__init__()
            self.srcs, self.titles = [], []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.srcs.append(dict(attrs)["src"])

    p = Images()
    p.feed(page)
    assert page.startswith("<!doctype html>") and "</html>" in page
    # size + latency-vs-agreement + per-class IoU change + the export's per-class IoU bars + one overlay figure
    assert len(p.srcs) >= 5 and all(s.startswith("data:image/png;base64,") for s in p.srcs)
    assert "Per-class IoU: tflite-fp32" in page and "<th>worst class (IoU Δ)</th>" in page
    assert "Masks: tflite-fp32" in page and "http" not in page.replace("http-equiv", "")


def test_report_json_validates_against_its_published_schema(reported, tmp_path, capsys):
    """report.json with budget and baseline verdicts validates; the schema is strict enough to catch a broken
    file (a CI reading it relies on the documented shape)."""
    from edgeseg.core.schemas import problems

    budget = tmp_path / "b.yaml"
    budget.write_text("defaults:\n  max_size_mb: 100\n  min_agreement: 99\n")
    # a baseline that was slower: timing noise on a shared CPU cannot turn this into a latency regression
    base = json.loads((reported.parent / "baseline.json").read_text())
    for r in base["results"]:
        if "median_ms" in (r.get("latency") or {}):
            r["latency"]["median_ms"] *= 100
    slow = tmp_path / "slow-baseline.json"
    slow.write_text(json.dumps(base))
    code, rep = _report(reported, "--budget", budget, "--baseline", slow, capsys=capsys)
    assert code == 0 and rep["status"] == "passed"
    assert problems(rep, "report-1") == []
    assert problems(json.loads((reported / "report.json").read_text()), "report-1") == []
    broken = json.loads(json.dumps(rep))
    broken["results"][1]["latency"] = {"median_ms": -1.0}
    broken["results"][1]["parity"]["pixel_agreement"] = 101.0
    del broken["status"]
    found = problems(broken, "report-1")
    assert found[0] == "(root): 'status' is a required property"
    assert any(p.startswith("results/1/latency") for p in found)
    assert any(p.startswith("results/1/parity") for p in found)
