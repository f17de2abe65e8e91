import numpy as np
import pytest
from PIL import Image

from conftest import ISBI
from edgeseg.data import open_split
from edgeseg.data.synthetic import CLASSES, SyntheticShapes
from edgeseg.data.transforms import Preprocess
from edgeseg.core.errors import DataError, UsageError


def test_synthetic_is_deterministic_and_seeded():
    a, b = SyntheticShapes("train", 64, 5, seed=3), SyntheticShapes("train", 64, 5, seed=3)
    for i in range(5):
        assert np.array_equal(a[i][0], b[i][0]) and np.array_equal(a[i][1], b[i][1])
    c = SyntheticShapes("train", 64, 5, seed=4)
    assert not np.array_equal(a[0][0], c[0][0])
    # splits are different scenes
    assert not np.array_equal(SyntheticShapes("test", 64, 1)[0][0], SyntheticShapes("train", 64, 1)[0][0])


def test_synthetic_classes_and_rare_class():
    ds = SyntheticShapes("train", 64, 200)
    assert len(CLASSES) >= 4 and CLASSES[0].name == "background"
    present = np.zeros(len(CLASSES))
    for i in range(len(ds)):
        img, m = ds[i]
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and m.shape == (64, 64)
        present += np.bincount(np.unique(m), minlength=len(CLASSES)) > 0
    frac = present / len(ds)
    assert frac[0] == 1.0 and all(frac[1:4] > 0.5)
    assert 0.05 < frac[4] < 0.35  # the star is rare


def test_synthetic_spec_options():
    ds = open_split("synthetic?train=7&seed=2", "train", 32)
    assert len(ds) == 7 and ds[0][0].shape == (32, 32, 3)
    with pytest.raises(UsageError, match="unknown option 'trian'.*did you mean 'train'"):
        open_split("synthetic?trian=7", "train", 32)
    with pytest.raises(UsageError, match="unknown dataset format 'synthtic'.*did you mean 'synthetic'"):
        open_split("synthtic", "train", 32)


@pytest.mark.skipif(not ISBI.is_dir(), reason="../shared/data/isbi-membrane not present")
def test_isbi_membranes_load_through_folder_format():
    spec = f"folder:{ISBI}?images=image&masks=label&values=0,255&classes=membrane,cell"
    splits = {s: open_split(spec, s) for s in ("train", "val", "test")}
    assert sum(len(d) for d in splits.values()) == 30
    assert all(len(d) > 0 for d in splits.values())
    names = [set(d.name(i) for i in range(len(d))) for d in splits.values()]
    assert not (names[0] & names[1]) and not (names[0] & names[2])
    img, m = splits["train"][0]
    assert img.shape == (512, 512, 3) and m.shape == (512, 512)
    assert set(np.unique(m)) == {0, 1}
    assert [c.name for c in splits["train"].classes] == ["membrane", "cell"]
    # 0 (membrane) is the minority of pixels in these images
    assert 0.1 < (m == 0).mean() < 0.4


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _folder(tmp_path, mask_value=1, mask_size=(8, 8)):
    root = tmp_path / "ds"
    for split in ("train", "val", "test"):
        _write(root / split / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
        m = np.zeros(mask_size, np.uint8)
        m[0, 0] = mask_value
        _write(root / split / "masks" / "a.png", m)
    (root / "classes.txt").write_text("background 0 0 0\nthing 255 0 0\n")
    return root


def test_folder_with_split_dirs_and_classes_txt(tmp_path):
    ds = open_split(f"folder:{_folder(tmp_path)}", "val")
    assert [c.name for c in ds.classes] == ["background", "thing"] and ds.classes[1].color == (255, 0, 0)
    assert ds[0][1][0, 0] == 1


def test_folder_mask_value_outside_classes_names_the_file(tmp_path):
    root = _folder(tmp_path, mask_value=7)
    with pytest.raises(DataError, match=r"mask '.*train/masks/a.png' has values \[7\] outside the 2 classes"):
        open_split(f"folder:{root}", "train")[0]


def test_folder_size_mismatch(tmp_path):
    root = _folder(tmp_path, mask_size=(4, 8))
    with pytest.raises(DataError, match=r"mask '.*a.png' is 8x4 but image '.*a.png' is 8x8"):
        open_split(f"folder:{root}", "train")[0]


def test_folder_corrupt_image_and_missing_mask(tmp_path):
    root = _folder(tmp_path)
    (root / "train" / "images" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"image '.*train/images/a.png' cannot be decoded"):
        open_split(f"folder:{root}", "train")[0]
    _write(root / "val" / "images" / "b.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"image '.*val/images/b.png' has no mask"):
        open_split(f"folder:{root}", "val")


def test_folder_values_must_cover_mask(tmp_path):
    root = _folder(tmp_path, mask_value=128)
    with pytest.raises(DataError, match=r"has values \[128\] not in values=\[0, 255\]"):
        open_split(f"folder:{root}?values=0,255", "train")[0]
    with pytest.raises(DataError, match="does not exist or is not a directory"):
        open_split(f"folder:{tmp_path}/missing", "train")


def test_preprocess_resizes_and_normalizes():
    pre = Preprocess(16, 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = pre.image(np.full((32, 32, 3), 255, np.uint8))
    assert x.shape == (3, 16, 16) and np.allclose(x, 1.0)
    m = np.zeros((32, 32), np.int64)
    m[:, 16:] = 3
    assert pre.mask(m)[0].tolist() == [0] * 8 + [3] * 8


def test_calibration_images_keep_uint8_frames_and_give_the_preprocessed_values():
    """The calibration set holds the resized uint8 frames (a quarter of the float32 bytes) and gives exactly what
    Preprocess.image gives, one NCHW image per item; slices stay lazy."""
    from types import SimpleNamespace

    from edgeseg.tasks.semantic.run import calibration_images
    from exporters.base import batches

    pre = Preprocess(48, 64, resize="letterbox")
    spec = "synthetic?train=12&val=2&test=2"
    ck = SimpleNamespace(config=SimpleNamespace(data=spec, image_size=64), preprocess=pre)
    cal = calibration_images(ck, 5)
    ds = open_split(spec, "train", 64)
    assert len(cal) == 5
    for k, i in enumerate([0, 3, 6, 8, 11]):  # np.linspace(0, 11, 5) rounded: evenly spaced over the split
        assert cal[k].dtype == np.float32 and cal[k].shape == (1, 3, 48, 64)
        np.testing.assert_array_equal(cal[k], pre.image(ds[i][0])[None])
    assert all(f.dtype == np.uint8 and f.shape == (48, 64, 3) for f in cal._frames)
    part = cal[1:3]
    assert len(part) == 2 and np.array_equal(part[0], cal[1]) and type(part) is type(cal)
    assert len(batches(cal)) == 5
