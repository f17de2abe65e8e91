"""Instance-mask overlays for ``report.html`` of a Mask R-CNN run (the page itself: :mod:`edgeseg.steps.report.html`).

Per checked export, for the first test images: the input, the PyTorch reference's instances, the export's instances
and the pixels where they disagree. Detections are matched and counted by the instance-parity rule
(:mod:`edgeseg.tasks.instance.parity`): a matched pair has one colour in both panels; a missed reference detection or
an extra exported one is drawn with a red dashed box. Disagreement: red where exactly one of the two covers the pixel
with an instance mask (probability >= 0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

# matched pairs cycle through these (tab10 without red, which marks missed/extra detections)
PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75),
                    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)], np.uint8)
RED = (230, 25, 25)


def shown_detections(ref: dict[str, np.ndarray], exp: dict[str, np.ndarray], score_threshold: float
                     ) -> dict[str, Any]:
    """What the overlay draws for one image, counted as instance parity counts it: ``pairs`` (ref, exp) where
    either score reaches the threshold, ``missed`` reference and ``extra`` exported indices above it."""
    from edgeseg.tasks.instance.parity import match

    pairs = match(ref, exp)
    seen_r, seen_e = {i for i, _ in pairs}, {j for _, j in pairs}
    return {"pairs": [(i, j) for i, j in pairs if max(ref["scores"][i], exp["scores"][j]) >= score_threshold],
            "missed": [i for i, s in enumerate(ref["scores"]) if s >= score_threshold and i not in seen_r],
            "extra": [j for j, s in enumerate(exp["scores"]) if s >= score_threshold and j not in seen_e]}


def _masks(d: dict[str, np.ndarray]) -> np.ndarray:
    m = np.asarray(d["masks"])
    return m.reshape(len(d["scores"]), *m.shape[-2:]) >= 0.5


def coverage(d: dict[str, np.ndarray], keep: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """Pixels covered by the masks of detections ``keep``."""
    m = _masks(d)
    out = np.zeros(shape, bool)
    for k in keep:
        out |= m[k]
    return out


def _draw(ax, img: np.ndarray, d: dict[str, np.ndarray], colored: Sequence[tuple[int, int]],
          flagged: Sequence[int], title: str) -> None:
    """``img`` with the masks of ``colored`` (index, palette slot) blended in and their boxes drawn; ``flagged``
    detections get a grey mask and a red dashed box."""
    from matplotlib.patches import Rectangle

    out = img.astype(np.float32).copy()
    m = _masks(d)
    boxes = []
    for k, slot in colored:
        c = PALETTE[slot % len(PALETTE)].astype(np.float32)
        out[m[k]] = 0.45 * out[m[k]] + 0.55 * c
        boxes.append((k, c / 255, "-"))
    for k in flagged:
        out[m[k]] = 0.45 * out[m[k]] + 0.55 * 200.0
        boxes.append((k, np.array(RED) / 255, "--"))
    ax.imshow(out.clip(0, 255).astype(np.uint8))
    for k, c, style in boxes:
        x1, y1, x2, y2 = (float(v) for v in d["boxes"][k])
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=c, linestyle=style, linewidth=1.2))
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def overlay_figures(report: dict[str, Any], run: Path, model, cfg: dict[str, Any], count: int, threads: int
                    ) -> list[tuple[str, str]]:
    """One figure per checked export: input | PyTorch | export | disagreement for ``count`` test images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeseg.tasks.instance.check import GraphCounts, detections, load_runner, reference_detections, to_input
    from edgeseg.core.html import png
    from edgeseg.tasks.instance.run import check_samples
    from exporters import ExporterError

    images, _ = check_samples(cfg, count)
    if not images:
        return []
    refs: dict[GraphCounts, list[dict[str, np.ndarray]]] = {}
    out = []
    for row in report["results"]:
        p = row.get("instance_parity") or {}
        if p.get("status") not in ("passed", "failed"):
            continue
        counts = GraphCounts(**row.get("graph", {}))
        if counts not in refs:
            refs[counts] = reference_detections(model, images, counts)
        try:
            runner = load_runner(row["target"], run / row["path"], threads)
            exps = [detections(runner(to_input(img)), img.shape[0]) for img in images]
        except ExporterError:
            continue
        t = float(row.get("score_threshold", 0.3))
        fig, axes = plt.subplots(len(images), 4, figsize=(8, 2.1 * len(images)), squeeze=False)
        for i, (img, ref, exp) in enumerate(zip(images, refs[counts], exps)):
            s = shown_detections(ref, exp, t)
            pairs = s["pairs"]
            _draw(axes[i][0], img, ref, [], [], "input")
            _draw(axes[i][1], img, ref, [(a, k) for k, (a, _) in enumerate(pairs)], s["missed"],
                  f"PyTorch ({len(pairs) + len(s['missed'])})")
            _draw(axes[i][2], img, exp, [(b, k) for k, (_, b) in enumerate(pairs)], s["extra"],
                  f"{row['name']} ({len(pairs) + len(s['extra'])})")
            shape = img.shape[:2]
            differ = (coverage(ref, [a for a, _ in pairs] + s["missed"], shape)
                      ^ coverage(exp, [b for _, b in pairs] + s["extra"], shape))
            diff = np.repeat((0.6 * img.mean(-1, keepdims=True)).astype(np.uint8), 3, -1)
            diff[differ] = RED
            axes[i][3].imshow(diff)
            axes[i][3].set_title(f"{len(s['missed'])} missed, {len(s['extra'])} extra, {differ.mean():.2%} px",
                                 fontsize=8)
            axes[i][3].axis("off")
        out.append((f"Instances: {row['name']} (score >= {t:g}; red dashed = missed / extra)", png(fig)))
    return out
