"""``report.html``: the report as one self-contained page (plots and mask overlays embedded as PNG).

Plots are drawn with matplotlib (Agg): latency vs mask agreement per export, size per export, and the change of
each class's IoU against ground truth per export. The task adds its table, its figures (semantic: a bar chart per
export of every class's IoU, PyTorch's beside the export's) and overlays: for the first test images, the input,
the PyTorch masks (or instances), each export's and the pixels where they disagree (red).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.html import page, png
from edgeseg.tasks.base import ReportSubject


def _agreement(row: dict[str, Any]) -> float | None:
    """A row's mask agreement with PyTorch: mask mIoU (semantic) or mean matched-instance mask IoU (instance)."""
    if (row.get("parity") or {}).get("mask_miou") is not None:
        return row["parity"]["mask_miou"]
    return (row.get("instance_parity") or {}).get("mask_iou_mean")


def plots(report: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    figs = []
    pts = [(r["name"], r["latency"]["median_ms"], _agreement(r)) for r in rows
           if "median_ms" in (r.get("latency") or {}) and _agreement(r) is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for name, lat, miou in pts:
            ax.scatter(lat, miou)
            ax.annotate(name, (lat, miou), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(f"median latency, ms ({report['results'][0]['latency'].get('threads', '?')} threads)")
        ax.set_ylabel("matched mask IoU vs PyTorch" if report.get("task") == "instance" else "mask mIoU vs PyTorch")
        ax.grid(alpha=0.3)
        figs.append(("Latency vs mask agreement", png(fig)))
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(rows) + 1))
    ax.barh([r["name"] for r in rows], [r["size_bytes"] / 1e6 for r in rows], color="#4c78a8")
    ax.set_xlabel("size, MB")
    ax.invert_yaxis()
    figs.append(("Size", png(fig)))
    changed = [(r["name"], r["parity"]["iou_change"]) for r in rows if (r.get("parity") or {}).get("iou_change")]
    if changed:
        classes = report["model"]["classes"]
        fig, ax = plt.subplots(figsize=(7, 3.6))
        width = 0.8 / len(changed)
        for k, (name, change) in enumerate(changed):
            vals = [change.get(c) or 0.0 for c in classes]
            ax.bar(np.arange(len(classes)) + k * width, vals, width, label=name)
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=30, ha="right")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_ylabel("IoU change vs ground truth")
        ax.legend(fontsize=7)
        figs.append(("Per-class IoU change (export minus PyTorch)", png(fig)))
    return figs


def write_html(report: dict[str, Any], subject: ReportSubject, path: Path, overlays: int = 3, threads: int = 2) -> None:
    """report.html: the task's table, the plots every run gets, and the task's overlays of the first ``overlays``
    test images per checked export."""
    from edgeseg.core.atomic import write_text

    intro, header, rows = subject.table(report)
    figures = plots(report) + subject.figures(report) + subject.overlays(report, overlays, threads)
    name = "Mask R-CNN" if report.get("task") == "instance" else report["model"]["name"]
    write_text(path, page(f"edgeseg report: {name}", intro, header, rows, figures))
