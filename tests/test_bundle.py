"""``edgeseg bundle``: the folder Android and iOS builds consume, its manifest, hashes and reproducibility."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeseg.core.digest import sha256
from edgeseg.steps.bundle.verify import validate, verify_bundle
from edgeseg.cli import main

pytestmark = pytest.mark.slow


def _export_and_check(run):
    for args in (["--target", "tflite", "--precision", "int8", "--input", "pixels"],
                 ["--target", "coreml", "--precision", "fp16"]):
        assert main(["export", str(run), *args, "-q"]) == 0
        assert main(["check", str(run), *args[:4], *args[4:], "-q"]) == 0


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """A copy of the tiny run with a checked pixel-input int8 TFLite, a checked Core ML fp16 export, an
    unchecked fp32 TFLite and a report."""
    run = tmp_path_factory.mktemp("bundle") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "report.*"))
    _export_and_check(run)
    assert main(["export", str(run), "--target", "tflite", "--precision", "fp32", "-q"]) == 0  # never checked
    assert main(["report", str(run), "--runs", "3", "-q", "--json"]) == 0
    return run


@pytest.fixture(scope="module")
def dist(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "dist"
    assert main(["bundle", str(run), "-o", str(out), "--name", "Tiny membranes", "--version", "2.1.0",
                 "--author", "Test Lab", "--license", "Apache-2.0", "-q"]) == 0
    return out


def test_bundle_layout_manifest_and_evidence(run, dist):
    from exporters.tflite_metadata import read

    m = json.loads((dist / "manifest.json").read_text())
    assert validate(m) == [] and m["schema"] == "edgeseg.bundle/1"
    names = sorted(p.relative_to(dist).as_posix() for p in dist.rglob("*") if p.is_file())
    assert names == sorted(["manifest.json", *[f["path"] for f in m["files"]]])
    for f in m["files"]:
        assert sha256(dist / f["path"]) == f["sha256"] and (dist / f["path"]).stat().st_size == f["size_bytes"]
    a, i = m["platforms"]["android"], m["platforms"]["ios"]
    # auto choice: the checked int8 pixel-input export, not the unchecked fp32 one
    assert a["export"] == "tflite-int8-pixels" and a["file"] == "android/model.tflite"
    # the ladder's file, whichever candidate won: camera bytes in
    assert a["input"] == {"shape": [1, 64, 64, 3], "layout": "NHWC", "dtype": "uint8",
                          "values": "RGB pixels 0-255", "quantization": {"scale": 1.0, "zero_point": 0}}
    assert a["output"]["kind"] == "logits" and a["output"]["shape"] == [1, 64, 64, len(m["classes"])]
    parity = json.loads((run / "export" / "tflite-int8-pixels" / "parity.json").read_text())
    assert a["parity"]["pixel_agreement"] == parity["pixel_agreement"] and a["parity"]["status"] == "passed"
    assert a["parity"]["worst_class"] == parity["worst_class"] and parity["worst_class"]["name"] in parity["iou_change"]
    report = {r["name"]: r for r in json.loads((run / "report.json").read_text())["results"]}
    assert a["latency"]["median_ms"] == report["tflite-int8-pixels"]["latency"]["median_ms"]
    assert i["file"] == "ios/TinyMembranes.mlpackage" and i["export"] == "coreml-fp16"
    assert i["latency"] is None or "median_ms" in i["latency"]  # Core ML latency needs macOS
    assert [c["name"] for c in m["classes"]] == (dist / "labels.txt").read_text().split()
    md = read((dist / "android" / "model.tflite").read_bytes())
    assert (md["name"], md["version"], md["author"], md["license"]) == ("Tiny membranes", "2.1.0", "Test Lab",
                                                                          "Apache-2.0")
    assert md["associated_files"]["labels.txt"] == (dist / "labels.txt").read_text()
    readme = (dist / "README.md").read_text()
    assert "```kotlin" in readme and "```swift" in readme and "TinyMembranes(configuration: config)" in readme
    w = parity["worst_class"]
    assert f"worst class against the test labels: {w['name']}, IoU {w['reference_iou']:.4f}" in readme
    assert "const val W = 64" in readme
    assert ("input.put(r.toByte())" if a["input"]["dtype"] == "uint8" else "input.putFloat(r.toFloat())") in readme
    assert verify_bundle(dist) == []


def test_bundled_models_run(run, dist):
    """The Android file runs in LiteRT exactly as the checked export does; the iOS package as the Core ML
    reference (macOS would use the runtime) with the metadata the bundle set."""
    from exporters import TARGETS
    from exporters.coreml_tools import import_ct

    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    bundled = TARGETS["tflite"].load(dist / "android" / "model.tflite")(x)
    exported = TARGETS["tflite"].load(run / "export" / "tflite-int8-pixels" / "model.tflite")(x)
    assert np.array_equal(bundled, exported)
    pkg = dist / "ios" / "TinyMembranes.mlpackage"
    ml = import_ct().models.MLModel(str(pkg), skip_model_load=True)
    assert ml.version == "2.1.0" and ml.author == "Test Lab"
    assert json.loads(ml.user_defined_metadata["classes"]) == (dist / "labels.txt").read_text().split()
    y = TARGETS["coreml"].load(pkg)(x)
    ref = TARGETS["coreml"].load(run / "export" / "coreml-fp16" / "model.mlpackage")(x)
    assert np.array_equal(y, ref)


def test_bundle_is_reproducible_across_bundles_and_re_exports(run, dist, tmp_path):
    """The same checkpoint and options give byte-identical files, even after exporting again."""
    again = tmp_path / "again"
    assert main(["bundle", str(run), "-o", str(again), "--name", "Tiny membranes", "--version", "2.1.0",
                 "--author", "Test Lab", "--license", "Apache-2.0", "-q"]) == 0
    first = {p.relative_to(dist).as_posix(): sha256(p) for p in dist.rglob("*") if p.is_file()}
    second = {p.relative_to(again).as_posix(): sha256(p) for p in again.rglob("*") if p.is_file()}
    assert first == second
    rerun = tmp_path / "rerun"
    shutil.copytree(run, rerun, ignore=shutil.ignore_patterns("export", "report.*"))
    _export_and_check(rerun)
    third = tmp_path / "third"
    assert main(["bundle", str(rerun), "-o", str(third), "--name", "Tiny membranes", "--version", "2.1.0",
                 "--author", "Test Lab", "--license", "Apache-2.0", "-q"]) == 0
    m1 = json.loads((dist / "manifest.json").read_text())
    m3 = json.loads((third / "manifest.json").read_text())
    # every model byte and label the same; README and manifest also carry the evidence (here: no report was
    # made for the re-export, so no latency), which is measured, not derived
    assert [f for f in m1["files"] if f["path"] != "README.md"] == \
        [f for f in m3["files"] if f["path"] != "README.md"]
    assert m1["platforms"]["android"]["parity"] == m3["platforms"]["android"]["parity"]
    assert m3["platforms"]["android"]["latency"] is None


def test_verify_finds_every_kind_of_tampering(dist, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(dist, bad)
    model = bad / "android" / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    (bad / "notes.txt").write_text("extra")
    (bad / "labels.txt").unlink()
    assert main(["bundle", "--verify", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "android/model.tflite: sha256 differs from manifest.json" in err
    assert "notes.txt: not listed in manifest.json" in err
    assert "labels.txt: listed in manifest.json but missing" in err
    # a manifest that points outside the bundle is refused by its schema before any file is read
    esc = tmp_path / "esc"
    shutil.copytree(dist, esc)
    m = json.loads((esc / "manifest.json").read_text())
    m["files"][0]["path"] = "../../etc/passwd"
    (esc / "manifest.json").write_text(json.dumps(m))
    problems = verify_bundle(esc)
    assert problems and "files/0/path" in problems[0]
    m["schema"] = "edgeseg.bundle/9"
    (esc / "manifest.json").write_text(json.dumps(m))
    assert verify_bundle(esc) == [f"{esc / 'manifest.json'}: schema is 'edgeseg.bundle/9', this edgeseg reads "
                                  f"'edgeseg.bundle/1'"]


def test_symlinked_file_is_refused(dist, tmp_path):
    link = tmp_path / "link"
    shutil.copytree(dist, link)
    (link / "labels.txt").unlink()
    outside = tmp_path / "outside.txt"
    outside.write_text((dist / "labels.txt").read_text())
    (link / "labels.txt").symlink_to(outside)
    assert "labels.txt: goes through a symbolic link" in verify_bundle(link)


def test_bundle_refusals_leave_nothing_behind(run, dist, tmp_path, capsys):
    out = tmp_path / "out"
    # an explicitly chosen export that was never checked
    assert main(["bundle", str(run), "-o", str(out), "--tflite", "fp32", "--coreml", "none"]) == 2
    assert "export 'tflite-fp32' has no passing parity check (unchecked)" in capsys.readouterr().err
    assert main(["bundle", str(run), "-o", str(out), "--tflite", "fp8"]) == 2
    assert "no export 'tflite-fp8'" in capsys.readouterr().err
    # an existing bundle is not overwritten without --force
    assert main(["bundle", str(run), "-o", str(dist)]) == 2
    assert "already exists and is not empty; pass --force" in capsys.readouterr().err
    # a failure half-way (a damaged export file) leaves neither the folder nor a temporary sibling
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    tfl = broken / "export" / "tflite-int8-pixels" / "model.tflite"
    tfl.write_bytes(tfl.read_bytes()[:1000])
    assert main(["bundle", str(broken), "-o", str(out)]) == 1
    assert "not a TFLite model" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob(".out.*")) == []
    # a failed parity check keeps an export out for good
    parity = broken / "export" / "coreml-fp16" / "parity.json"
    p = json.loads(parity.read_text())
    p.update(status="failed", failures=["pixel agreement 90.0 % < 99.5 %"])
    parity.write_text(json.dumps(p))
    assert main(["bundle", str(broken), "-o", str(out), "--coreml", "fp16", "--tflite", "none",
                 "--allow-unchecked"]) == 1
    assert "failed its parity check (pixel agreement 90.0 % < 99.5 %)" in capsys.readouterr().err
