"""COCO box and mask AP of instance predictions, computed by pycocotools' ``COCOeval`` (the reference code)."""

from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def coco_ap(targets: Sequence[dict], predictions: Sequence[dict], num_classes: int,
            mask_threshold: float = 0.5) -> dict[str, dict[str, float]]:
    """Box and mask AP (COCO's 0.50:0.95 IoU range and the usual variants) of ``predictions`` against ``targets``.

    Each target: ``boxes`` [K, 4] x1y1x2y2, ``labels`` [K], ``masks`` [K, H, W]. Each prediction: the same plus
    ``scores`` [D]; ``masks`` may be probabilities [D, 1, H, W] or [D, H, W] (thresholded at ``mask_threshold``).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, (t, p) in enumerate(zip(targets, predictions)):
        h, w = np.asarray(t["masks"]).shape[-2:]
        images.append({"id": i, "height": int(h), "width": int(w)})
        for box, label, m in zip(np.asarray(t["boxes"]), np.asarray(t["labels"]), np.asarray(t["masks"])):
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label), "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(m.sum()), "segmentation": _rle(m)})
        pm = np.asarray(p["masks"])
        if pm.ndim == 4:
            pm = pm[:, 0]
        for box, label, score, m in zip(np.asarray(p["boxes"]), np.asarray(p["labels"]), np.asarray(p["scores"]),
                                        pm):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"image_id": i, "category_id": int(label), "score": float(score),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "segmentation": _rle(m >= mask_threshold)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c} for c in range(1, num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    out: dict[str, dict[str, float]] = {}
    for kind in ("bbox", "segm"):
        if not results:
            out[kind] = {k: 0.0 for k in AP_KEYS}
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes([dict(r) for r in results])
            ev = COCOeval(gt, dt, kind)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out["box" if kind == "bbox" else "mask"] = {k: float(v) for k, v in zip(AP_KEYS, ev.stats[:6])}
    if "bbox" in out:
        out["box"], out["mask"] = out.pop("bbox"), out.pop("segm")
    return out
