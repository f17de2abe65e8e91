"""Self-contained HTML pages (``report.html``): figures embedded as PNG data URIs, one table, no external files."""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Sequence

import numpy as np


def png(fig) -> str:
    """A matplotlib figure as a PNG data URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def colorize(mask: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """A class map as RGB, class i in ``colors[i]`` (out-of-range values black)."""
    out = np.zeros(mask.shape + (3,), np.uint8)
    valid = (mask >= 0) & (mask < len(colors))
    out[valid] = colors[mask[valid]]
    return out


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
