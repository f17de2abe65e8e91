import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core plus one (make test: WORKERS): one compute thread each. With torch's default
    # of one thread per core in every worker, OpenMP's spin-waiting threads fight over the cores (measured on
    # 2 cores: the suite took 37 min instead of 16 serially). Set before torch is imported; the edgeseg
    # processes the tests start inherit it.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(var, "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"
ISBI = SHARED / "data" / "isbi-membrane"
SELFIE = SHARED / "models" / "selfie_segmentation.tflite"

# A tiny U-Net on 64px synthetic scenes: trains in seconds, still learns real masks.
TINY = dict(model="unet", model_kwargs={"base": 12, "depth": 3}, data="synthetic?train=96&val=12&test=12",
            image_size=64, epochs=6, batch_size=8, lr=1e-2, precise_bn_batches=6, seed=1)


# Modules by their measured cost (seconds of one worker, `make test --durations=0`, AMD EPYC, 2 cores: 2026-12-07),
# largest first. `make test` hands whole files to the workers (--dist loadfile: a module's fixtures, a trained
# model or an export, are built once, not once per worker) in this order (--no-loadscope-reorder: xdist would
# otherwise order them by their number of tests): longest first, so no worker is left alone with a long module at
# the end. Modules not named follow, those with slow tests first.
HEAVY = ["test_architectures", "test_maskrcnn_export", "test_quantize", "test_reliability", "test_executorch",
         "test_training_scale", "test_coreml_reference", "test_import", "test_arm64", "test_exporters", "test_cli",
         "test_bundle", "test_instance", "test_ladder", "test_losses"]


def pytest_collection_modifyitems(config, items):
    # A module's tests stay together and in their order (pytest tears a module's fixtures down when the next test
    # is from another module).
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    order = {id(item): k for k, item in enumerate(items)}

    def rank(item):
        name = item.module.__name__
        return (HEAVY.index(name) if name in HEAVY else len(HEAVY), name not in slow, order[id(item)])

    items.sort(key=rank)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny training run shared by the export/check/report tests."""
    from edgeseg.train.config import TrainConfig
    from edgeseg.train.loop import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    train(TrainConfig(**TINY), out, quiet=True, log=lambda s: None)
    return out
