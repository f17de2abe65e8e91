"""The real dataset formats, read from fixtures written in their exact official layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edgeseg.data import open_split
from edgeseg.data.augment import Augment, AugmentSpec
from edgeseg.data.check import check_dataset
from edgeseg.data.transforms import Preprocess
from edgeseg.core.errors import DataError, UsageError
from conftest import ISBI
from layouts import (H, W, write_camvid_colour, write_camvid_segnet, write_cityscapes, write_coco, write_cvat_coco,
                     write_cvat_masks, write_labelme_coco, write_labelme_voc, write_roboflow_coco, write_voc)


def test_voc_palette_masks_decode_pixel_exactly(tmp_path):
    exp = write_voc(tmp_path)
    root = tmp_path / "VOCdevkit" / "VOC2012"
    ds = open_split(f"voc:{root}", "train")
    assert len(ds) == 2 and len(ds.classes) == 21
    assert ds.classes[15].name == "person" and ds.classes[15].color == (192, 128, 128)
    assert ds.classes[1].color == (128, 0, 0)
    img, mask = ds[0]
    assert img.shape == (H, W, 3) and np.array_equal(mask, exp["2007_000032"])
    assert mask[2, 3] == 255 and mask[4, 5] == 15
    # test reads val (VOC's test labels are not public)
    assert open_split(f"voc:{root}", "test").name(0).endswith("2007_000033.jpg")


def test_voc_wrong_root_suggests_the_real_one(tmp_path):
    write_voc(tmp_path)
    with pytest.raises(DataError, match=r"no JPEGImages/ under '.*' — did you mean '.*VOCdevkit/VOC2012'\?"):
        open_split(f"voc:{tmp_path}", "train")
    with pytest.raises(DataError, match=r"did you mean '.*VOCdevkit/VOC2012'\?"):
        open_split(f"voc:{tmp_path / 'VOCdevkit'}", "train")


def test_voc_sbd_augmented_set(tmp_path):
    exp = write_voc(tmp_path, aug=True)
    ds = open_split(f"voc:{tmp_path / 'VOCdevkit' / 'VOC2012'}?aug=true", "train")
    assert len(ds) == 3
    assert np.array_equal(ds[2][1], exp["aug/2008_000002"])
    assert len(open_split(f"voc:{tmp_path / 'VOCdevkit' / 'VOC2012'}?aug=true", "val")) == 1


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    exp = write_cityscapes(tmp_path)
    ds = open_split(f"cityscapes:{tmp_path}", "train")
    assert len(ds.classes) == 19 and ds.classes[0].name == "road" and ds.classes[18].name == "bicycle"
    assert ds.classes[13].color == (0, 0, 142)
    img, mask = ds[0]
    assert np.array_equal(mask, exp["aachen_000000_000019"])
    labels, masks, crowd = ds.instances(0)
    # two cars with instance ids; the person and bicycle regions carry a label id without instance
    # number, which Cityscapes uses for groups (crowds)
    assert sorted(labels.tolist()) == [11, 13, 13, 18] and masks.shape == (4, H, W)
    assert sorted(labels[crowd].tolist()) == [11, 18]
    assert sorted(m.sum() for m in masks[labels == 13]) == [16, 16]
    assert open_split(f"cityscapes:{tmp_path}", "test").name(0).endswith("frankfurt_000000_000019_leftImg8bit.png")


def test_cityscapes_coarse_needs_gtcoarse(tmp_path):
    write_cityscapes(tmp_path)
    with pytest.raises(DataError, match="no gtCoarse/ under"):
        open_split(f"cityscapes:{tmp_path}?mode=coarse", "train")
    with pytest.raises(UsageError, match="mode must be 'fine' or 'coarse'"):
        open_split(f"cityscapes:{tmp_path}?mode=medium", "train")


def test_camvid_segnet_layout(tmp_path):
    exp = write_camvid_segnet(tmp_path)
    ds = open_split(f"camvid:{tmp_path}", "val")
    assert len(ds.classes) == 11 and ds.classes[0].name == "Sky"
    assert np.array_equal(ds[0][1], exp["0001TP_001690"])
    assert (ds[0][1] == 255).sum() == (H * W) // 12


@pytest.mark.parametrize("kaggle", [False, True])
def test_camvid_colour_labels_32_and_11(tmp_path, kaggle):
    exp = write_camvid_colour(tmp_path, kaggle=kaggle)
    seen = {}
    for split in ("train", "val", "test"):
        try:
            ds32 = open_split(f"camvid:{tmp_path}", split)
        except DataError:
            continue  # the hash split may leave a split of three files empty
        ds11 = open_split(f"camvid:{tmp_path}?classes=11", split)
        assert [c.name for c in ds32.classes][:3] == ["Animal", "Archway", "Bicyclist"]
        assert len(ds11.classes) == 11
        for i in range(len(ds32)):
            stem = ds32.name(i).rsplit("/", 1)[1][:-4]
            seen[stem] = True
            assert np.array_equal(ds32[i][1], exp[stem][0])
            assert np.array_equal(ds11[i][1], exp[stem][1])
    assert len(seen) == 3


def test_camvid_unknown_colour_is_named(tmp_path):
    write_camvid_colour(tmp_path, kaggle=True)
    lab = tmp_path / "train_labels" / "0001TP_006690_L.png"
    arr = np.asarray(Image.open(lab)).copy()
    arr[0, 0] = (1, 2, 3)
    Image.fromarray(arr).save(lab)
    with pytest.raises(DataError, match=r"label '.*0001TP_006690_L.png' has colours \[\(1, 2, 3\)\]"):
        open_split(f"camvid:{tmp_path}", "train")[0]


def test_coco_semantic_masks_polygon_rle_crowd(tmp_path):
    exp = write_coco(tmp_path)
    # torchvision's rule drops training images whose chosen instances cover <= 1000 pixels: all of these
    assert len(open_split(f"coco:{tmp_path}?categories=voc&empty=keep", "train")) == 2
    with pytest.raises(DataError, match="has no images with the chosen categories"):
        open_split(f"coco:{tmp_path}?categories=voc", "train")
    ds = open_split(f"coco:{tmp_path}?categories=voc&min_area=0", "train")
    # image 2 has only a kite: dropped for train (no VOC category), kept with empty=keep
    assert len(ds) == 1 and len(ds.classes) == 21 and ds.classes[15].name == "person"
    img, mask = ds[0]
    assert np.array_equal(mask, exp["voc/1"])
    # all categories: contiguous 1..N in id order; the kite is painted now
    full = open_split(f"coco:{tmp_path}?min_area=0", "train")
    names = [c.name for c in full.classes]
    assert names[0] == "background" and names.index("kite") == 15  # 15th category id
    assert (full[0][1] == 15).sum() == 9
    named = open_split(f"coco:{tmp_path}?categories=person,dog&min_area=0", "train")
    assert [c.name for c in named.classes] == ["background", "person", "dog"]
    assert (named[0][1] == 2).sum() == 12 and (named[0][1] == 1).sum() == 16 + 8


def test_coco_instance_targets_leave_crowds_out(tmp_path):
    write_coco(tmp_path)
    ds = open_split(f"coco:{tmp_path}?categories=voc&min_area=0", "train")
    img, t = ds.instances(0)
    assert t["labels"].tolist() == [15, 7, 12]
    assert t["boxes"].tolist()[0] == [2, 2, 6, 6] and t["masks"].shape == (3, H, W)
    assert t["masks"][1].sum() == 24


def test_coco_bad_inputs(tmp_path):
    write_coco(tmp_path)
    with pytest.raises(UsageError, match=r"COCO has no category 'dgo' \(did you mean 'dog'\?\)"):
        open_split(f"coco:{tmp_path}?categories=dgo", "train")
    with pytest.raises(DataError, match="no annotations/ and no COCO JSON under .* did you mean"):
        (tmp_path / "top").mkdir()
        (tmp_path / "top" / "coco").symlink_to(tmp_path)
        open_split(f"coco:{tmp_path / 'top'}", "train")
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{not json")
    with pytest.raises(DataError, match=r"annotation file '.*instances_val2017.json' is not valid JSON"):
        open_split(f"coco:{tmp_path}", "val")


def test_data_check_lists_every_broken_file(tmp_path):
    write_voc(tmp_path)
    root = tmp_path / "VOCdevkit" / "VOC2012"
    # truncated image, label of the wrong size, label value outside the classes, listed id without files
    data = (root / "JPEGImages" / "2007_000032.jpg").read_bytes()
    (root / "JPEGImages" / "2007_000032.jpg").write_bytes(data[: len(data) // 3])
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "SegmentationClass" / "2007_000039.png")
    bad_val = np.zeros((H, W), np.uint8)
    bad_val[0, 0] = 42
    Image.fromarray(bad_val).save(root / "SegmentationClass" / "2007_000033.png")
    with open(root / "ImageSets" / "Segmentation" / "train.txt", "a") as f:
        f.write("2009_999999\n")
    rep = check_dataset(f"voc:{root}", ("train", "val"))
    assert not rep["ok"]
    tr, va = rep["splits"]["train"], rep["splits"]["val"]
    assert tr["samples"] == 2 and len(tr["problems"]) == 1 and "2009_999999" in tr["problems"][0]
    assert len(tr["bad_files"]) == 2
    assert "2007_000032.jpg' cannot be decoded" in tr["bad_files"][0]
    assert "2007_000039.png' is 5x5 but image" in tr["bad_files"][1]
    assert va["bad_files"] == [f"label '{root}/SegmentationClass/2007_000033.png' has values [42] outside the 21 "
                               f"classes (0..20, 255 = ignore)"]
    # the ignored border pixels are counted apart from the class histogram
    assert va["samples"] == 1


def run_cli(*args):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "edgeseg", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def test_data_check_cli_exit_codes(tmp_path):
    write_cityscapes(tmp_path)
    code, out, err = run_cli("data", "check", str(tmp_path), "--format", "cityscapes", "--json", "-q")
    rep = json.loads(out)
    assert code == 0 and rep["ok"] and rep["splits"]["train"]["class_pixels"]["car"] == 32
    assert rep["splits"]["train"]["image_sizes"] == {f"{W}x{H}": 1}
    (tmp_path / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000019_gtFine_labelIds.png").unlink()
    code, out, err = run_cli("data", "check", f"cityscapes:{tmp_path}", "-q")
    # test reads val's files, so they are checked (and reported) once
    assert code == 1 and "has no label file" in out and "FAILED: 1 problem(s)" in out
    assert "test: the same files as val" in out


def test_augment_identity_padding_and_determinism():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, (40, 60)).astype(np.int64)
    # no scaling, no flip, no jitter: exactly the evaluation resize
    pre = Preprocess(20, 30)
    same = Augment("scale=1-1,flip=0", 20, 30)
    out_img, out_mask = same(pre.resize_image(img), pre.mask(mask), seed=[0, 0, 0])
    assert np.array_equal(out_mask, pre.mask(mask)) and np.array_equal(out_img, pre.resize_image(img))
    # shrinking pads the crop with ignored mask pixels
    small = Augment("scale=0.5-0.5,flip=0", 20, 30)
    _, m = small(pre.resize_image(img), pre.mask(mask), seed=[0, 0, 1])
    assert m.shape == (20, 30) and (m == 255).sum() == 20 * 30 - 10 * 15
    # the same (seed, epoch, index) gives the same sample, another index another one
    std = Augment("standard", 20, 30)
    img, mask = pre.resize_image(img), pre.mask(mask)
    a1, m1 = std(img, mask, seed=[3, 1, 7])
    a2, m2 = std(img, mask, seed=[3, 1, 7])
    a3, _ = std(img, mask, seed=[3, 1, 8])
    assert np.array_equal(a1, a2) and np.array_equal(m1, m2) and not np.array_equal(a1, a3)


def test_augment_moves_boxes_with_the_flip():
    img = np.zeros((10, 20, 3), np.uint8)
    mask = np.zeros((10, 20), np.int64)
    masks = np.zeros((1, 10, 20), np.uint8)
    masks[0, 2:5, 1:4] = 1
    flip = Augment("scale=1-1,flip=1", 10, 20)
    _, _, t = flip(img, mask, seed=[0, 0, 0], instances={"boxes": np.array([[1, 2, 4, 5]], np.float32),
                                                          "labels": np.array([3]), "masks": masks})
    assert t["boxes"].tolist() == [[16, 2, 19, 5]] and t["masks"][0, 2:5, 16:19].all() and t["labels"].tolist() == [3]


@pytest.mark.parametrize("spec,msg", [
    ("scale=2-1", "scale=LO-HI needs 0 < LO <= HI"), ("flip=2", "flip= is a probability"),
    ("rotate=10", "cannot read 'rotate=10'"), ("jitter=x", "jitter= takes a number"),
])
def test_bad_augment_specs(spec, msg):
    with pytest.raises(UsageError, match=msg):
        AugmentSpec.parse(spec)


def test_training_stops_on_a_bad_file_or_skips_it(tmp_path):
    from edgeseg.train.config import TrainConfig
    from edgeseg.train.loop import train

    write_cityscapes(tmp_path / "cs")
    # a second training image that is not a PNG at all
    bad = tmp_path / "cs" / "leftImg8bit" / "train" / "aachen" / "aachen_000001_000019_leftImg8bit.png"
    bad.write_bytes(b"not an image")
    lab = tmp_path / "cs" / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    (lab.parent / "aachen_000001_000019_gtFine_labelIds.png").write_bytes(lab.read_bytes())
    cfg = TrainConfig(model="unet", model_kwargs={"base": 4, "depth": 2}, data=f"cityscapes:{tmp_path / 'cs'}",
                      image_size=16, epochs=1, batch_size=2, precise_bn_batches=1)
    with pytest.raises(DataError, match=r"(?s)1 bad file\(s\) in this batch:\n  image '.*aachen_000001_000019_"
                                        r"leftImg8bit.png' cannot be decoded.*--skip-bad"):
        train(cfg, tmp_path / "run", quiet=True, log=lambda s: None)
    ck = train(cfg, tmp_path / "run2", quiet=True, log=lambda s: None, skip_bad=True)
    assert len(ck.metrics["skipped_files"]) == 1 and "aachen_000001" in ck.metrics["skipped_files"][0]


@pytest.mark.skipif(not ISBI.is_dir(), reason="../shared/data/isbi-membrane not present")
def test_real_isbi_sample_through_the_folder_format():
    isbi_spec = f"folder:{ISBI}?images=image&masks=label&values=0,255&classes=membrane,cell"
    ds = open_split(isbi_spec, "train")
    img, mask = ds[0]
    assert img.shape == (512, 512, 3) and set(np.unique(mask)) <= {0, 1}
    rep = check_dataset(isbi_spec, ("train",), limit=3)
    assert rep["ok"] and rep["splits"]["train"]["checked"] == 3


# --- layouts annotation tools write (issue 19) --------------------------------------------------------

def _all_splits(spec: str) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (mask, split) over train/val/test; every file in exactly one split."""
    out = {}
    for split in ("train", "val", "test"):
        ds = open_split(spec, split)
        for i in range(len(ds)):
            assert ds.name(i) not in out, f"{ds.name(i)} is in two splits"
            img, mask = ds[i]
            assert img.shape == (H, W, 3)
            out[ds.name(i)] = (mask, split)
    return out


@pytest.mark.parametrize("npy", [False, True])
def test_labelme_voc_export_without_imagesets(tmp_path, npy):
    from edgeseg.data.io import split_of

    exp = write_labelme_voc(tmp_path, npy=npy)
    got = _all_splits(f"voc:{tmp_path}")
    assert len(got) == len(exp)
    for stem, m in exp.items():
        mask, split = got[str(tmp_path / "JPEGImages" / f"{stem}.jpg")]
        assert np.array_equal(mask, m) and split == split_of(stem, (0.7, 0.15, 0.15))
    ds = open_split(f"voc:{tmp_path}", "train")
    assert [c.name for c in ds.classes] == ["_background_", "cat", "dog"]
    assert ds.classes[1].color == (128, 0, 0)  # labelme draws with the VOC colour map
    assert "labelme" in ds.layout and "split by file-name hash" in ds.layout
    # split fractions are an option; everything in train
    assert len(open_split(f"voc:{tmp_path}?split=1,0,0", "train")) == len(exp)


@pytest.mark.parametrize("subsets", [False, True])
def test_cvat_segmentation_mask_export(tmp_path, subsets):
    exp = write_cvat_masks(tmp_path, subsets=subsets)
    ds = open_split(f"voc:{tmp_path}", "train")
    assert [c.name for c in ds.classes] == ["background", "road", "car"]
    assert ds.classes[2].color == (250, 50, 83) and "CVAT" in ds.layout
    got = {ds.name(i): ds[i][1] for i in range(len(ds))}
    if subsets:
        assert len(got) == 7 and len(open_split(f"voc:{tmp_path}", "val")) == 3
    for name, mask in got.items():
        m = exp[name.rsplit("/", 1)[1][:-4]]
        assert np.array_equal(mask, m) and (mask[0] == 255).all()  # VOC's void colour is ignored
    # a colour that is not in the labelmap is named with the file and the labelmap
    lab = tmp_path / "SegmentationClass" / f"{ds.name(0).rsplit('/', 1)[1][:-4]}.png"
    rgb = np.array(Image.open(lab))
    rgb[5, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(lab)
    with pytest.raises(DataError, match=r"label '.*\.png' has colours \[\(1, 2, 3\)\] that are not in "
                                        r"'.*labelmap.txt'"):
        ds[0]


def test_labelmap_errors(tmp_path):
    write_cvat_masks(tmp_path)
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\nroad:0,0,0::\n")
    with pytest.raises(DataError, match=r"gives \['background', 'road'\] the same colour \(0, 0, 0\)"):
        open_split(f"voc:{tmp_path}", "train")
    (tmp_path / "labelmap.txt").write_text("background:0,0::\n")
    with pytest.raises(DataError, match=r"labelmap.txt:1: expected 'name:R,G,B:parts:actions'"):
        open_split(f"voc:{tmp_path}", "train")


def test_labelme_coco_json_with_background_category(tmp_path):
    exp = write_labelme_coco(tmp_path)
    spec = f"coco:{tmp_path / 'annotations.json'}"
    ds = open_split(spec, "train")
    assert [c.name for c in ds.classes] == ["_background_", "cat", "dog"]
    assert "split by file-name hash" in ds.layout and "_background_" in ds.layout
    got = _all_splits(spec)
    assert len(got) == len(exp)
    for stem, m in exp.items():
        assert np.array_equal(got[str(tmp_path / "JPEGImages" / f"{stem}.jpg")][0], m)
    # the folder holding one JSON is the same dataset
    assert len(open_split(f"coco:{tmp_path}", "train")) == len(ds)


def test_roboflow_coco_export_splits_and_project_category(tmp_path):
    exp = write_roboflow_coco(tmp_path)
    sizes = {s: len(open_split(f"coco:{tmp_path}", s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 6, "val": 2, "test": 2}
    ds = open_split(f"coco:{tmp_path}", "val")
    assert [c.name for c in ds.classes] == ["background", "cat", "dog"]  # project category 'pets' dropped
    assert "Roboflow" in ds.layout and "'pets' (id 0)" in ds.layout
    for i in range(len(ds)):
        key = "valid/" + ds.name(i).rsplit("/", 1)[1]
        assert np.array_equal(ds[i][1], exp[key])
    # one split's file alone, as a user may point at it
    assert len(open_split(f"coco:{tmp_path / 'train' / '_annotations.coco.json'}?split=1,0,0", "train")) == 6
    import shutil

    shutil.rmtree(tmp_path / "test")
    rep = check_dataset(f"coco:{tmp_path}")
    assert rep["ok"] and "no test split" in rep["splits"]["test"]["missing"]


def test_cvat_coco_export_images_folder_and_contiguous_ids(tmp_path):
    exp = write_cvat_coco(tmp_path)
    got = _all_splits(f"coco:{tmp_path}")
    ds = open_split(f"coco:{tmp_path}", "train")
    assert [c.name for c in ds.classes] == ["background", "car", "road"]
    for stem, m in exp.items():
        assert np.array_equal(got[str(tmp_path / "images" / f"{stem}.jpg")][0], m)
    # images= names the folder explicitly (relative to the JSON's folder)
    spec = f"coco:{tmp_path / 'annotations' / 'instances_default.json'}?images=../images"
    assert len(open_split(spec, "train")) == len(ds)


def test_coco_json_bad_inputs(tmp_path):
    write_cvat_coco(tmp_path)
    js = tmp_path / "annotations" / "instances_default.json"
    doc = json.loads(js.read_text())
    doc["annotations"][0]["category_id"] = 7
    js.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"instances_default.json': annotations use category ids \[7\] that "
                                        r"'categories' does not list"):
        open_split(f"coco:{js}", "train")
    js.write_text(json.dumps({"images": [], "info": {}}))
    with pytest.raises(DataError, match=r"is not a COCO instances file"):
        open_split(f"coco:{js}", "train")
    with pytest.raises(DataError, match=r"images=nowhere: '.*nowhere' is not a directory"):
        write_cvat_coco(tmp_path)
        open_split(f"coco:{js}?images=nowhere", "train")
    (tmp_path / "images").rename(tmp_path / "pictures")
    with pytest.raises(DataError, match=r"cannot find the images of '.*instances_default.json' \(e.g. "
                                        r"'frame_000.jpg'\).*give the folder with \?images=DIR"):
        open_split(f"coco:{js}", "train")
    with pytest.raises(UsageError, match=r"split= takes three fractions summing to 1"):
        open_split(f"coco:{js}?split=0.5,0.5", "train")


def test_cityscapes_val_only_download_is_checked_on_val(tmp_path):
    import shutil

    exp = write_cityscapes(tmp_path)
    shutil.rmtree(tmp_path / "leftImg8bit" / "train")
    shutil.rmtree(tmp_path / "gtFine" / "train")
    rep = check_dataset(f"cityscapes:{tmp_path}")
    assert rep["ok"], rep
    assert "no train split" in rep["splits"]["train"]["missing"] and "val" in rep["splits"]["train"]["missing"]
    assert rep["splits"]["val"]["samples"] == 1
    assert np.array_equal(open_split(f"cityscapes:{tmp_path}", "val")[0][1], exp["frankfurt_000000_000019"])
    from edgeseg.core.errors import MissingSplit

    with pytest.raises(MissingSplit, match=r"Cityscapes '.*' has no train split: no leftImg8bit/train/ "
                                           r"\(splits here: val\)"):
        open_split(f"cityscapes:{tmp_path}", "train")


def test_voc_with_val_list_only(tmp_path):
    write_voc(tmp_path)
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for f in ("train.txt", "trainval.txt"):
        (root / "ImageSets" / "Segmentation" / f).unlink()
    rep = check_dataset(f"voc:{root}")
    assert rep["ok"] and "no ImageSets/Segmentation/train.txt" in rep["splits"]["train"]["missing"]
    assert rep["splits"]["val"]["samples"] == 1 and rep["layout"].startswith("VOC 2012")


def test_data_check_cli_names_the_layout(tmp_path):
    write_labelme_voc(tmp_path)
    code, out, err = run_cli("data", "check", f"voc:{tmp_path}", "-q")
    assert code == 0, out + err
    assert "layout: labelme VOC export (no ImageSets/: every mask, split by file-name hash; classes from " \
           "class_names.txt)" in out
