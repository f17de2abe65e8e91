import numpy as np
import pytest

from edgeseg.core.atomic import atomic_path, ensure_dir, write_json
from edgeseg.core.errors import UsageError
from exporters import TARGETS, ExporterError, ExportOptions


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text().strip().endswith("}") and '"v": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_directory_artifacts_are_replaced_whole(tmp_path):
    d = tmp_path / "model.mlpackage"
    for content in ("old", "new"):
        with atomic_path(d) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(content)
    assert (d / "weights").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model.mlpackage"]


def test_output_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        ensure_dir(tmp_path / "f")


@pytest.mark.slow
def test_failed_int8_export_writes_no_model(tiny_run, tmp_path):
    from edgeseg.train.checkpoint import load_checkpoint

    model = load_checkpoint(tiny_run).build_model()
    opts = ExportOptions(precision="int8", calibration=(), work_dir=tmp_path)
    with pytest.raises(ExporterError, match="int8 TFLite needs calibration images"):
        TARGETS["tflite"].export(model, np.zeros((1, 3, 64, 64), np.float32), opts, tmp_path / "out")
    assert not (tmp_path / "out" / "model.tflite").exists()


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has exited
    stale = tmp_path / f".model.onnx.{dead}.abc123.tmp"
    (stale / "model.onnx").parent.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    alive = tmp_path / f".model.onnx.{os.getppid()}.def456.tmp"  # a live writer's: left alone
    alive.mkdir()
    other = tmp_path / f".labels.txt.{dead}.x.tmp"  # another artifact's: not this write's business
    other.mkdir()
    with atomic_path(tmp_path / "model.onnx") as tmp:
        tmp.write_bytes(b"complete")
    assert (tmp_path / "model.onnx").read_bytes() == b"complete"
    assert not stale.exists() and alive.exists() and other.exists()
