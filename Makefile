# Two commands do all the set-up on a fresh machine (Python 3.11, pip reaching PyPI):
#   make quickstart   install into .venv, then train -> export TFLite + Core ML -> check -> report
#   make test         install into .venv, then run the test suite (what .ci/run runs)
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin
ONNX2TF = onnx2tf==2.6.9

.PHONY: install quickstart test bench clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "edgeseg needs $(PYTHON) (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[all,dev]"
	# onnx2tf 2.x writes .tflite without TensorFlow; its metadata pins other versions and Python >= 3.12, its code
	# runs on the locked set under 3.11 (docs/stack.md), so it goes in alone, its imports listed in pyproject.toml
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python $(ONNX2TF)
	$(BIN)/python -c "from exporters.nncf_tools import build_extensions; build_extensions()"
	touch $@

quickstart: install
	$(BIN)/edgeseg quickstart -o runs/quickstart

# one worker more than the cores (at most 4): the CLI, reliability and Kotlin tests wait on subprocesses and leave a
# core idle; on 2 cores 3 workers took 9 min 17 s - 10 min 15 s where 2 took 10 min 10 s - 10 min 37 s (2026-12-08,
# AMD EPYC with AVX-512 VNNI)
WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0)) + 1))")
test: install
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder tests

bench: install
	$(BIN)/python benchmarks/export_bench.py

clean:
	rm -rf $(VENV) runs
