"""Fuzzing the files users hand to edgeseg: every malformed input ends in edgeseg's own error naming the file —
never another exception type (which the CLI would show as an internal error)."""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeseg.steps.report.budget import load_budget
from edgeseg.steps.bundle.verify import verify_bundle
from edgeseg.train.config import TrainConfig
from edgeseg.core.errors import EdgesegError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12)
trees = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids,
                                                                                           max_size=4), max_leaves=12)
# near-valid documents: the real keys with random values, where bugs hide
budget_docs = st.fixed_dictionaries({}, optional={
    "defaults": st.dictionaries(st.sampled_from(["max_size_mb", "max_latency_ms", "min_agreement", "max_miou_drop",
                                                 "max_class_drop",
                                                 "max_sise_mb"]), scalars, max_size=3) | trees,
    "exports": st.dictionaries(st.sampled_from(["tflite-int8", "coreml-fp16", "x"]), trees, max_size=3) | trees})


def _raises_only_edgeseg_errors(fn, path):
    try:
        fn(path)
    except EdgesegError as e:
        assert str(path) in str(e) or path.name in str(e), str(e)


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_budget_yaml_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fz") / "budget.yaml"
    path.write_bytes(data)
    _raises_only_edgeseg_errors(load_budget, path)


@FUZZ
@given(budget_docs | trees)
def test_budget_yaml_structures(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("fz") / "budget.yaml"
    path.write_text(yaml.safe_dump(doc))
    _raises_only_edgeseg_errors(load_budget, path)


@FUZZ
@given(st.fixed_dictionaries({}, optional={k: scalars | trees for k in
                                            ("model", "data", "epochs", "batch_size", "lr", "image_size", "loss",
                                             "model_kwargs", "augment", "ema", "seed")}) | trees)
def test_training_config_yaml(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("fz") / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    _raises_only_edgeseg_errors(TrainConfig.from_yaml, path)


@FUZZ
@given(st.binary(max_size=300) | trees.map(lambda t: json.dumps(t).encode()) |
       st.fixed_dictionaries({"schema": st.just("edgeseg.bundle/1")}, optional={
           "files": trees, "platforms": trees, "model": trees, "classes": trees}).map(lambda t: json.dumps(t).encode()))
def test_bundle_manifest(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("bundle")
    (root / "manifest.json").write_bytes(data)
    try:
        problems = verify_bundle(root)
    except EdgesegError as e:
        assert "manifest.json" in str(e)
        return
    assert problems and all(isinstance(p, str) for p in problems)  # a random manifest is never a valid bundle
