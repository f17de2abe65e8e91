"""``report.html``: the report as one self-contained page (plots and mask overlays embedded as PNG).

Plots are drawn with matplotlib (Agg): latency vs mask mIoU per export, size per export, and the change of
each class's IoU against ground truth per export. Mask overlays show, for the first test images, the input,
the PyTorch mask, each export's mask and the pixels where they disagree (red).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _colorize(mask: np.ndarray, colors: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape + (3,), np.uint8)
    valid = (mask >= 0) & (mask < len(colors))
    out[valid] = colors[mask[valid]]
    return out


def _agreement(row: dict[str, Any]) -> float | None:
    """A row's mask agreement with PyTorch: mask mIoU (semantic) or mean matched-instance mask IoU (instance)."""
    if (row.get("parity") or {}).get("mask_miou") is not None:
        return row["parity"]["mask_miou"]
    return (row.get("instance_parity") or {}).get("mask_iou_mean")


def _plots(report: dict[str, Any]) -> list[tuple[str, str]]:
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
        figs.append(("Latency vs mask agreement", _png(fig)))
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(rows) + 1))
    ax.barh([r["name"] for r in rows], [r["size_bytes"] / 1e6 for r in rows], color="#4c78a8")
    ax.set_xlabel("size, MB")
    ax.invert_yaxis()
    figs.append(("Size", _png(fig)))
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
        figs.append(("Per-class IoU change (export minus PyTorch)", _png(fig)))
    return figs


def _overlays(report: dict[str, Any], run: Path, ckpt, count: int, threads: int) -> list[tuple[str, str]]:
    """One figure per checked export: input | PyTorch | export | disagreement, for ``count`` test images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeseg.core.latency import torch_runner
    from edgeseg.data import open_split
    from exporters import TARGETS, ExporterError

    test = open_split(ckpt.config.data, "test", ckpt.config.image_size)
    n = min(count, len(test))
    if n == 0:
        return []
    pre = ckpt.preprocess
    raw = [test[i][0] for i in range(n)]
    x = np.stack([pre.image(img) for img in raw])
    shown = [pre.resize_image(img) for img in raw]
    colors = np.array([c.color for c in ckpt.classes], np.uint8)
    ref_model, ref_name = ckpt.reference_model()
    ref = torch_runner(ref_model, threads)(x).argmax(1)
    ref_name = "PyTorch" if ref_name == "PyTorch" else "reference (ONNX)"
    out = []
    for row in report["results"]:
        if row["target"] == "pytorch" or (row.get("parity") or {}).get("status") not in ("passed", "failed"):
            continue
        try:
            y = TARGETS[row["target"]].load(run / row["path"], threads=threads)(x)
        except ExporterError:
            continue
        em = y if y.ndim == 3 else y.argmax(1)
        fig, axes = plt.subplots(n, 4, figsize=(8, 2.1 * n), squeeze=False)
        for i in range(n):
            diff = np.repeat((0.6 * shown[i].mean(-1, keepdims=True)).astype(np.uint8), 3, -1)
            diff[ref[i] != em[i]] = (230, 25, 25)
            for ax, im, title in zip(axes[i], (shown[i], _colorize(ref[i], colors), _colorize(em[i], colors), diff),
                                     ("input", ref_name, row["name"], f"disagree {(ref[i] != em[i]).mean():.2%}")):
                ax.imshow(im)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
        out.append((f"Masks: {row['name']}", _png(fig)))
    return out


def write_html(report: dict[str, Any], run: Path, ckpt, path: Path, overlays: int = 3, threads: int = 2) -> None:
    from edgeseg.core.atomic import write_text

    m = report["model"]
    figures = _plots(report) + _overlays(report, run, ckpt, overlays, threads)
    rows = []
    for r in report["results"]:
        p, lat = r.get("parity") or {}, r.get("latency") or {}
        cells = [r["name"], f"{r['size_bytes'] / 1e6:.2f}",
                 f"{lat['median_ms']:.2f}" if "median_ms" in lat else "not measured",
                 p.get("status", "reference" if r["target"] == "pytorch" else "not checked"),
                 "" if p.get("pixel_agreement") is None else f"{p['pixel_agreement']:.3f}",
                 "" if p.get("mask_miou") is None else f"{p['mask_miou']:.4f}", lat.get("runtime", "")]
        rows.append(table_row(cells))
    gates = ""
    if "budget" in report or "baseline" in report:
        gates = f"<p>CI gates: <b>{html.escape(report.get('status', ''))}</b> (details in report.json)</p>"
    intro = (f"<p>input {'x'.join(map(str, m['input']))}, {m['params'] / 1e6:.2f} M params, classes: "
             f"{html.escape(', '.join(m['classes']))}</p>\n{gates}")
    header = ("export", "size MB", "median ms", "parity", "agreement %", "mask mIoU", "runtime")
    write_text(path, page(f"edgeseg report: {m['name']}", intro, header, rows, figures))


def page(title: str, intro: str, header: Sequence[str], rows: Sequence[str], figures: Sequence[tuple[str, str]]) -> str:
    """The self-contained page: ``intro`` (HTML), a table (``rows``: ``<tr>`` elements) and the figures."""
    body = "\n".join(f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='{src}'>" for t, src in figures)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:14px}}img{{max-width:100%}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
{intro}
<table><tr>{head}</tr>
{''.join(rows)}
</table>
{body}
</body></html>
"""


def table_row(cells: Sequence[Any]) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"
