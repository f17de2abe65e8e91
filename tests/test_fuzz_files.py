"""Fuzzing the loaders of user files: images and masks, COCO annotation files, checkpoints, .tflite and .mlpackage.

Every malformed input must end in edgeseg's own error naming the file (or load, when the bytes happen to form a
valid file) — never another exception type, a hang or a crash of the interpreter. The native loaders (LiteRT,
coremltools' protobuf reader) run in a subprocess harness, so a segfault would fail the test instead of killing
the suite. ``tests/fuzz_corpus/`` keeps the malformed files found or crafted so far; each one is replayed on
every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeseg.core.errors import EdgesegError

CORPUS = Path(__file__).parent / "fuzz_corpus"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _png_bytes(seed: int = 0) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _named(err: Exception, path: Path) -> bool:
    return str(path) in str(err) or path.name in str(err)


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Truncations, byte overwrites and random bytes around a valid file."""
    n = len(data)
    truncate = st.integers(0, n - 1).map(lambda k: data[:k])
    overwrite = st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=16).map(
        lambda edits: bytes(_apply(bytearray(data), edits)))
    return st.one_of(truncate, overwrite, st.binary(max_size=2048))


def _apply(b: bytearray, edits) -> bytearray:
    for i, v in edits:
        b[i] = v
    return b


# -- images and masks ------------------------------------------------------------------------------------------

@FUZZ
@given(data=_mutations(_png_bytes()))
def test_fuzz_image_and_mask_files(tmp_path, data):
    """The readers every format goes through (folder, VOC, COCO, CamVid images; masks) and each format's
    label decoder (VOC palette, Cityscapes label IDs, CamVid SegNet indices and colour table)."""
    from edgeseg.data.camvid import decode_colour, decode_segnet
    from edgeseg.data.cityscapes import decode_cityscapes
    from edgeseg.data.io import read_image, read_mask
    from edgeseg.data.voc import decode_index

    colours = {0: 0, (128 << 16) | (64 << 8) | 128: 1}
    for reader in (read_image, read_mask, decode_index, decode_cityscapes, decode_segnet,
                   lambda p: decode_colour(p, colours)):
        path = tmp_path / "x.png"
        path.write_bytes(data)
        try:
            out = reader(path)
        except EdgesegError as e:
            assert _named(e, path), str(e)
        else:
            assert isinstance(out, np.ndarray) and out.ndim in (2, 3)


# -- COCO annotation files ---------------------------------------------------------------------------------------

_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=4),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=20)
_coco_like = st.fixed_dictionaries(
    {}, optional={"images": st.lists(st.dictionaries(st.sampled_from(["id", "file_name", "height", "width"]), _json),
                                     max_size=3) | _json,
                  "annotations": st.lists(st.dictionaries(st.sampled_from(
                      ["id", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd"]), _json),
                      max_size=3) | _json,
                  "categories": st.lists(st.dictionaries(st.sampled_from(["id", "name"]), _json), max_size=3) | _json})


@FUZZ
@given(doc=st.one_of(_json, _coco_like), raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_fuzz_coco_annotation_files(tmp_path, doc, raw):
    from edgeseg.data.coco import _load_index

    path = tmp_path / "instances_val2017.json"
    path.write_bytes(raw if raw is not None else json.dumps(doc).encode())
    try:
        _load_index(path)
    except EdgesegError as e:
        assert _named(e, path), str(e)


# -- checkpoints ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_bytes(tiny_run):
    return (tiny_run / "checkpoint.pt").read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), kind=st.sampled_from(["truncate", "overwrite", "random"]))
@example(seed=4654541, kind="overwrite")  # found by this test: an overwritten storage record -> AttributeError
def test_fuzz_checkpoints(tmp_path, checkpoint_bytes, seed, kind):
    from edgeseg.train.checkpoint import load_checkpoint

    rng = np.random.default_rng(seed)
    b = bytearray(checkpoint_bytes)
    if kind == "truncate":
        b = b[: int(rng.integers(0, len(b)))]
    elif kind == "overwrite":
        for i in rng.integers(0, len(b), 16):
            b[int(i)] = int(rng.integers(0, 256))
    else:
        b = bytearray(rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes())
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(bytes(b))
    try:
        load_checkpoint(path)
    except EdgesegError as e:
        assert _named(e, path), str(e)


# -- native loaders in a subprocess harness ----------------------------------------------------------------------

_HARNESS = r"""
import json, sys
from pathlib import Path
import numpy as np
kind, paths = sys.argv[1], sys.argv[2:]
out = []
for p in paths:
    try:
        if kind == "tflite":
            from exporters.tflite import load
            r = load(Path(p))
            r(np.zeros(r.input_shape_nchw, np.float32))
        else:
            from exporters.coreml_reference import MILReference
            MILReference(Path(p))
        out.append(["ok", ""])
    except Exception as e:
        from exporters.base import ExporterError
        out.append(["named" if isinstance(e, ExporterError) and Path(p).name in str(e) else "other",
                    f"{type(e).__name__}: {str(e)[:300]}"])
print(json.dumps(out))
"""


def _harness(kind: str, paths: list[Path]) -> list[list[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", _HARNESS, kind, *map(str, paths)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, f"the {kind} loader crashed the interpreter (exit {r.returncode}): {r.stderr[-1500:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def _mutated_files(src: bytes, folder: Path, suffix: str, count: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        b = bytearray(src)
        mode = i % 3
        if mode == 0:
            b = b[: int(rng.integers(1, len(b)))]
        elif mode == 1:
            for j in rng.integers(0, len(b), 24):
                b[int(j)] = int(rng.integers(0, 256))
        else:  # the flatbuffer / protobuf header region, where structure lives
            for j in rng.integers(0, min(len(b), 4096), 4):
                b[int(j)] = int(rng.integers(0, 256))
        p = folder / f"m{i:03d}{suffix}"
        p.write_bytes(bytes(b))
        out.append(p)
    return out


def test_fuzz_tflite_files(tmp_path):
    from tests.conftest import SELFIE

    if not SELFIE.exists():
        pytest.skip("../shared/models/selfie_segmentation.tflite is not here")
    paths = _mutated_files(SELFIE.read_bytes(), tmp_path, ".tflite", 45, seed=11)
    paths += sorted(CORPUS.glob("*.tflite"))
    results = _harness("tflite", paths)
    assert all(status in ("ok", "named") for status, _ in results), [r for r in results if r[0] == "other"]
    assert sum(status == "named" for status, _ in results) >= 30  # most mutations are refused, by name


def test_fuzz_mlpackage_files(tmp_path, tiny_run):
    import shutil

    from edgeseg.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "report.*"))
    assert main(["export", str(run), "--target", "coreml", "-q"]) == 0
    pkg = run / "export" / "coreml-fp16" / "model.mlpackage"
    spec = next(pkg.rglob("model.mlmodel"))
    weights = next(pkg.rglob("weight.bin"))
    manifest = pkg / "Manifest.json"
    packages = []
    for target, count in ((spec, 12), (weights, 6), (manifest, 6)):
        for i, mutated in enumerate(_mutated_files(target.read_bytes(), tmp_path / "m", ".bin", count, seed=7)):
            copy = tmp_path / f"p-{target.name}-{i}.mlpackage"
            shutil.copytree(pkg, copy)
            shutil.copyfile(mutated, copy / target.relative_to(pkg))
            packages.append(copy)
    results = _harness("mlpackage", packages)
    assert all(status in ("ok", "named") for status, _ in results), [r for r in results if r[0] == "other"]


# -- the corpus --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(p for p in CORPUS.iterdir() if p.suffix in (".png", ".json", ".pt")),
                         ids=lambda p: p.name)
def test_fuzz_corpus_replays(path, tmp_path):
    """Every kept malformed file still ends in edgeseg's own error naming it."""
    import shutil

    from edgeseg.data.coco import _load_index
    from edgeseg.data.io import read_image, read_mask
    from edgeseg.train.checkpoint import load_checkpoint

    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    loaders = {".png": (read_image, read_mask), ".json": (_load_index,), ".pt": (load_checkpoint,)}[path.suffix]
    for load in loaders:
        with pytest.raises(EdgesegError) as e:
            load(copy)
        assert _named(e.value, copy), str(e.value)
