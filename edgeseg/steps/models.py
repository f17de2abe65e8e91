"""``edgeseg models``: every architecture with its parameters and multiply-adds at an input size."""

from __future__ import annotations

from typing import Any


def maskrcnn_row(classes: int, h: int, w: int) -> dict[str, Any]:
    """Mask R-CNN (MobileNetV3-Large FPN) as ``train --model maskrcnn`` builds it: MACs of its export graph
    (fixed counts: 100 proposals, 20 detections) at a square side (the longer of ``h``, ``w``, rounded up to 32)."""
    import torch

    from edgeseg.models import count_params
    from edgeseg.models.macs import count_macs
    from edgeseg.tasks.instance.model import build_maskrcnn
    from edgeseg.tasks.instance.static_graph import build_static

    side = -(-max(h, w) // 32) * 32
    model = build_maskrcnn(classes + 1, min_size=side, max_size=side).eval()
    with torch.no_grad():
        macs = count_macs(build_static(model, side), torch.zeros(1, 3, side, side))
    return {"name": "maskrcnn", "params": count_params(model), "macs": macs, "size": [side, side], "task": "instance",
            "doc": f"Mask R-CNN, MobileNetV3-Large FPN (instance segmentation; square input, {classes} classes + "
                   f"background; train --model maskrcnn)"}


def model_table(h: int, w: int, classes: int) -> list[dict[str, Any]]:
    """One row per registered architecture (default options) and Mask R-CNN: params, MACs at h x w, doc line."""
    import torch

    from edgeseg.models import MODELS, build_model, count_params
    from edgeseg.models.macs import count_macs

    rows = []
    for name in MODELS:
        m = build_model(name, classes).eval()
        rows.append({"name": name, "params": count_params(m), "task": "semantic",
                     "macs": count_macs(m, torch.zeros(1, 3, h, w)), "size": [h, w],
                     "doc": (MODELS.get(name).__doc__ or "").strip().splitlines()[0]})
    rows.append(maskrcnn_row(classes, h, w))
    return rows
