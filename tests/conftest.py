import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core (make test: -n auto): one compute thread each. With torch's default
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


def pytest_collection_modifyitems(config, items):
    # Modules with slow tests (training, converters: tens of seconds) first, the quick ones after. `make test` runs
    # xdist with --dist loadgroup and no groups: every test is its own unit, handed to whichever worker is free, in
    # this order (longest first: no worker is left running one long test alone at the end). xdist_group marks
    # would not take here: xdist 3.8 groups by renaming item._nodeid, which pytest 9.2 no longer reads (measured:
    # a marked module's tests still went to both workers).
    # A module's tests stay together and in their order: pytest tears a module's fixtures down when the next test
    # is from another module (measured: interleaving rebuilt test_maskrcnn_export's trained model four times).
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    order = {id(item): k for k, item in enumerate(items)}
    items.sort(key=lambda item: (item.module.__name__ not in slow, order[id(item)]))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny training run shared by the export/check/report tests."""
    from edgeseg.train.config import TrainConfig
    from edgeseg.train.loop import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    train(TrainConfig(**TINY), out, quiet=True, log=lambda s: None)
    return out
