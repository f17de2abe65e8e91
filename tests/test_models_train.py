import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import TINY
from edgeseg.train.config import TrainConfig
from edgeseg.core.errors import CheckpointError, UsageError
from edgeseg.models import build_model, count_params
from edgeseg.models.macs import count_macs
from edgeseg.train.checkpoint import load_checkpoint, save_checkpoint
from edgeseg.train.evaluate import recalibrate_batchnorm
from edgeseg.train.loop import compute_class_weights, lr_lambda, train


@pytest.mark.parametrize("name,kw", [("unet", {"base": 4, "depth": 2}), ("unet", {"base": 4, "up": "bilinear"})])
def test_unet_keeps_input_size(name, kw):
    m = build_model(name, 5, **kw).eval()
    assert m(torch.zeros(2, 3, 64, 96)).shape == (2, 5, 64, 96)


def test_unet_structure_and_macs():
    m = build_model("unet", 2, base=4, depth=1, batch_norm=False)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d) and not isinstance(c, nn.ConvTranspose2d)]
    # level 0: 2 convs, level 1: 2 convs, up block: 2 convs, head 1x1
    assert [c.kernel_size for c in convs] == [(3, 3)] * 6 + [(1, 1)]
    assert any(isinstance(c, nn.ConvTranspose2d) and c.stride == (2, 2) for c in m.modules())
    # hand count at 8x8: 3*4*9*64 + 4*4*9*64 + 4*8*9*16 + 8*8*9*16 + tconv 16*8... see below
    macs = count_macs(m, torch.zeros(1, 3, 8, 8))
    expected = (3 * 4 * 9 * 64 + 4 * 4 * 9 * 64 + 4 * 8 * 9 * 16 + 8 * 8 * 9 * 16
                + 16 * 8 * 4 * 4  # transposed conv: input pixels(16) x in(8) x out(4) x k(4)
                + 8 * 4 * 9 * 64 + 4 * 4 * 9 * 64 + 4 * 2 * 64)
    assert macs == expected


def test_model_errors_suggest():
    with pytest.raises(UsageError, match="unknown model 'unte'.*did you mean 'unet'"):
        build_model("unte", 3)
    with pytest.raises(UsageError, match="model 'unet' has no option 'bas'.*did you mean 'base'"):
        build_model("unet", 3, bas=4)


def test_encoder_weights_from_local_file(tmp_path):
    from torchvision.models import mobilenet_v3_large

    ref = mobilenet_v3_large(weights=None)
    torch.save(ref.state_dict(), tmp_path / "mnv3.pth")
    m = build_model("lraspp", 3, encoder_weights=str(tmp_path / "mnv3.pth"))
    assert torch.equal(m.encoder.blocks[0][0].weight, ref.features[0][0].weight)
    with pytest.raises(CheckpointError, match="do not exist"):
        build_model("lraspp", 3, encoder_weights=str(tmp_path / "none.pth"))
    with pytest.raises(CheckpointError, match="do not fit resnet18"):
        build_model("deeplabv3", 3, encoder="resnet18", encoder_weights=str(tmp_path / "mnv3.pth"))


def test_class_weights_hand_computed():
    f = np.array([6.0, 3.0, 1.0, 0.0])
    inv = compute_class_weights(f, "inverse")
    # 1/f = [10/6, 10/3, 10] normalized to mean 1 over the 3 present classes
    np.testing.assert_allclose(inv, np.array([1 / 6, 1 / 3, 1, 0]) / (1.5 / 3), rtol=1e-6)
    med = compute_class_weights(f, "median")
    np.testing.assert_allclose(med, [0.5, 1.0, 3.0, 0.0], rtol=1e-6)


def test_lr_schedule():
    f = lr_lambda(total_steps=10, warmup_steps=2, schedule="cosine")
    assert f(0) == 0.5 and f(1) == 1.0 and f(2) == 1.0 and f(10) == pytest.approx(0.0)
    assert lr_lambda(10, 0, "poly")(5) == pytest.approx(0.5 ** 0.9)


def test_recalibrate_batchnorm_measures_real_statistics():
    bn = nn.BatchNorm2d(2, momentum=0.01)
    model = nn.Sequential(bn)
    data = [(torch.randn(4, 2, 3, 3) * 3 + 5, None) for _ in range(3)]
    used = recalibrate_batchnorm(model, data, torch.device("cpu"), batches=3)
    allx = torch.cat([d[0] for d in data])
    assert used == 3 and bn.momentum == 0.01 and not model.training
    torch.testing.assert_close(bn.running_mean, allx.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)


def test_config_rejects_unknown_keys():
    with pytest.raises(UsageError, match="unknown key 'epoch'.*did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(UsageError, match="image_size=8 must be at least 16"):
        TrainConfig(image_size=8)


def test_tiny_training_learns_and_checkpoint_is_self_describing(tiny_run):
    ck = load_checkpoint(tiny_run)
    hist = ck.metrics["history"]
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert ck.metrics["val"]["miou"] > 0.6  # measured 0.73; chance is about 0.1
    assert ck.class_names == ("background", "ellipse", "rectangle", "triangle", "star")
    assert ck.preprocess.height == 64 and ck.versions["torch"].startswith("2.14")
    assert ck.state["finished"] and ck.metrics["bn_recalibration_batches"] == 6
    assert (tiny_run / "metrics.json").exists() and (tiny_run / "history.csv").read_text().count("\n") == 7


def test_resume_after_interruption_matches_uninterrupted(tmp_path, monkeypatch):
    cfg = TrainConfig(**{**TINY, "epochs": 2, "data": "synthetic?train=16&val=4&test=4", "precise_bn_batches": 2})
    full = train(cfg, tmp_path / "full", quiet=True, log=lambda s: None)
    import edgeseg.train.loop as loop

    real = loop.evaluate
    calls = {"n": 0}

    def crash_in_second_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed before epoch 2's checkpoint
        return real(*a, **k)

    monkeypatch.setattr(loop, "evaluate", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", quiet=True, log=lambda s: None)
    monkeypatch.setattr(loop, "evaluate", real)
    assert load_checkpoint(tmp_path / "cut").state["epoch"] == 1
    with pytest.raises(UsageError, match="already holds a checkpoint; use --resume"):
        train(cfg, tmp_path / "cut", quiet=True, log=lambda s: None)
    resumed = train(cfg, tmp_path / "cut", resume=True, quiet=True, log=lambda s: None)
    for k, v in full.weights.items():
        torch.testing.assert_close(resumed.weights[k], v, msg=k)


def test_init_from_other_architecture_is_refused(tiny_run, tmp_path):
    cfg = TrainConfig(**{**TINY, "model_kwargs": {"base": 4, "depth": 2}, "epochs": 1})
    with pytest.raises(CheckpointError, match=r"--init-from '.*checkpoint.pt' holds a unet \{'base': 12, 'depth': 3\} "
                                              r"with 5 classes, which does not fit unet \{'base': 4, 'depth': 2\}"):
        train(cfg, tmp_path / "x", init_from=tiny_run, quiet=True, log=lambda s: None)


def test_unsafe_and_corrupt_checkpoints(tmp_path, tiny_run):
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    bad = tmp_path / "evil.pt"
    torch.save({"format": "edgeseg-checkpoint", "x": Evil()}, bad, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match="refused by the safe loader"):
        load_checkpoint(bad)
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt or not a PyTorch file"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="is not an edgeseg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    # class-count mismatch between stored config and weights
    ck = load_checkpoint(tiny_run)
    ck.classes = ck.classes[:3]
    save_checkpoint(ck, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="does not fit model 'unet' with 3 classes"):
        load_checkpoint(tmp_path / "mismatch.pt").build_model()


def test_param_count():
    assert count_params(build_model("unet", 2, base=4, depth=1, batch_norm=False)) > 0


@pytest.mark.parametrize("name,kw", [("unet", {"base": 4, "depth": 6}), ("lraspp", {}), ("deeplabv3plus", {}),
                                     ("gscnn", {}), ("fastfcn", {}), ("unet", {"encoder": "mobilenet_v2"})])
def test_sides_the_stride_does_not_divide_are_padded_inside_the_graph(name, kw):
    """A 40x72 input runs as 64x128 / 64x96 inside and comes back 40x72; the padded rows and columns are zeros,
    exactly what the model computes on a zero-padded input cropped by hand."""
    import torch

    from edgeseg.models import check_input_size

    torch.manual_seed(0)
    model = build_model(name, 3, **kw).eval()
    d = model.size_divisor
    assert check_input_size(name, model, 40, 72) == (40 + -40 % d, 72 + -72 % d)
    x = torch.randn(1, 3, 40, 72)
    with torch.no_grad():
        y = model(x)
        padded = model(torch.nn.functional.pad(x, (0, -72 % d, 0, -40 % d)))
    assert y.shape == (1, 3, 40, 72)
    torch.testing.assert_close(y, padded[..., :40, :72], rtol=1e-4, atol=1e-4)


def test_models_without_input_padding_refuse_sides_they_cannot_take():
    from edgeseg.models import check_input_size

    model = build_model("unet", 2, base=4, depth=6)
    model.pads_input = False
    with pytest.raises(UsageError, match=r"--image-size: model 'unet' needs input sides divisible by 64, got "
                                         r"96x100; use e.g. 128x128"):
        check_input_size("unet", model, 96, 100)


@pytest.mark.parametrize("name,kw,msg", [
    ("lraspp", {"encoder": "resnet18"}, "lraspp is defined on MobileNetV3"),
    ("lraspp", {"encoder": "resnet81"}, "unknown encoder 'resnet81' \\(did you mean 'resnet18'\\?\\)"),
    ("deeplabv3", {"output_stride": 32}, "deeplabv3 takes output_stride 8 or 16, not 32"),
    ("deeplabv3plus", {"output_stride": 4}, "takes output_stride 8 or 16, not 4"),
    ("gscnn", {"output_stride": 32}, "gscnn takes output_stride 8 or 16"),
    ("fastfcn", {"head": "psp"}, "fastfcn head must be 'fcn' or 'aspp'"),
    ("unet", {"encoder_weights": "x.pth"}, "encoder_weights needs encoder="),
])
def test_combinations_that_make_no_sense(name, kw, msg):
    with pytest.raises(UsageError, match=msg):
        build_model(name, 3, **kw)
