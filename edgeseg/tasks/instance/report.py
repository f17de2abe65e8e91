"""What ``edgeseg report`` measures on a Mask R-CNN run: the export graph in PyTorch and every export timed on one
input (batch 1, the graph's fixed counts), the instance parity each export's check measured, and instance overlays.

The same ``report.json`` schema as a semantic run (``edgeseg.report/1``, ``"task": "instance"``): a row's semantic
``parity`` is null and its ``instance_parity`` holds the figures ``export``/``check`` measured (matched mask and
box IoU, missed/extra detections, mask/box AP of both). The Core ML program is executed by reference on Linux (its
speed is not a device's, so it is not reported).
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.core.errors import DataError, UsageError, worst_status
from edgeseg.core.html import table_row
from edgeseg.tasks.base import ExportEntry, Task

ORDER = {"fp32": 0, "fp16": 1, "int8": 2, "int8-weights": 3, "int8-mixed": 4}


class InstanceReport:
    """:class:`~edgeseg.tasks.base.ReportSubject` of a Mask R-CNN run."""

    def __init__(self, task: Task, run: Path, threads: int) -> None:
        self.task = task
        from edgeseg.models import count_params
        from edgeseg.tasks.instance.check import GraphCounts
        from edgeseg.tasks.instance.run import load_run, training_record
        from edgeseg.tasks.instance.static_graph import build_static

        self.run = Path(run)
        self.net, self.cfg = load_run(self.run)
        size = int(self.cfg["size"])
        self.example = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)  # pixels / 255
        self.params = count_params(self.net)
        self.graph = build_static(self.net, size, **GraphCounts().to_json())
        self.model = {"name": "maskrcnn", "kwargs": {"backbone": self.cfg.get("backbone")}, "params": self.params,
                      "input": [1, 3, size, size], "classes": list(self.cfg.get("classes") or ["object"])}
        self.training = {"data": self.cfg["data"], "epochs": self.cfg.get("epochs"), "val_miou": None,
                         "test_ap": (training_record(self.run) or {}).get("ap")}
        self.fields = {"task": "instance", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def reference_row(self, runs: int, warmup: int, threads: int) -> dict[str, Any]:
        import torch

        from edgeseg.core.latency import measure_latency

        def eager(inp: np.ndarray):
            prev = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with torch.no_grad():
                    return self.graph(torch.from_numpy(inp))
            finally:
                torch.set_num_threads(prev)

        return {"name": "pytorch-fp32", "target": "pytorch", "precision": "fp32", "params": self.params,
                "size_bytes": sum(v.numel() * v.element_size() for v in self.net.state_dict().values()),
                "latency": {**measure_latency(eager, self.example, runs, warmup),
                            "runtime": f"PyTorch eager CPU (export graph), {threads} threads", "threads": threads},
                "parity": None}

    def entries(self) -> list[ExportEntry]:
        found = sorted(self.task.exports(self.run, "*"),
                       key=lambda e: (e.name.split("-")[1], ORDER.get(e.name.split("-", 2)[2], 9)))
        if not found:
            raise UsageError(f"run '{self.run}' has no exports to report on; first: edgeseg export {self.run} "
                             f"--target tflite")
        return found

    def row(self, entry: ExportEntry) -> dict[str, Any]:
        from edgeseg.tasks.instance.check import GraphCounts

        rec = entry.record
        if entry.parity is None:
            raise DataError(f"'{entry.dir}' has no parity.json; check it again: edgeseg maskrcnn check {self.run} "
                            f"--target {rec['target']} --precision {rec['precision']}")
        path = entry.dir / Path(rec["path"]).name  # older records hold the path as the exporter was called
        return {"name": entry.name, "target": rec["target"], "precision": rec["precision"],
                "size_bytes": int(rec["size_bytes"]), "params": self.params, "path": str(path.relative_to(self.run)),
                "export_seconds": rec.get("export_seconds", 0.0), "parity": None, "instance_parity": entry.parity,
                "score_threshold": float(rec.get("score_threshold", 0.3)),
                "graph": {k: int(rec["details"]["graph"][k]) for k in GraphCounts().to_json()}}

    def runner(self, entry: ExportEntry, threads: int) -> tuple[Callable[[np.ndarray], Any] | None, str]:
        from edgeseg.tasks.instance.check import load_runner

        path = entry.dir / Path(entry.record["path"]).name  # as row() names it
        return load_runner(entry.record["target"], path, threads), ""

    def status(self, rows: list[dict[str, Any]], verdicts: list[str]) -> str:
        return worst_status(r["instance_parity"]["status"] for r in rows[1:])

    def table(self, report: dict[str, Any]) -> tuple[str, tuple[str, ...], list[str]]:
        m = report["model"]
        f = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        rows = []
        for r in report["results"]:
            p, lat = r.get("instance_parity") or {}, r.get("latency") or {}
            ra, ea = p.get("reference_ap") or {}, p.get("exported_ap") or {}
            rows.append(table_row([
                r["name"], f"{r['size_bytes'] / 1e6:.2f}", f"{lat['median_ms']:.2f}" if "median_ms" in lat else
                "not measured", p.get("status", "reference" if r["target"] == "pytorch" else "not checked"),
                f"{p['matched']} / {p['missed']} / {p['extra']}" if p else "", f(p.get("mask_iou_mean")),
                f(p.get("box_iou_mean")), f"{f(ra.get('mask'))} → {f(ea.get('mask'))}" if ra else "",
                lat.get("runtime", "")]))
        intro = (f"<p>Mask R-CNN ({html.escape(str(m['kwargs'].get('backbone')))}), input "
                 f"{'x'.join(map(str, m['input']))}, {m['params'] / 1e6:.2f} M params, classes: "
                 f"{html.escape(', '.join(m['classes']))}</p>")
        header = ("export", "size MB", "median ms", "parity", "matched / missed / extra", "mask IoU", "box IoU",
                  "mask AP ref → export", "runtime")
        return intro, header, rows

    def figures(self, report: dict[str, Any]) -> list[tuple[str, str]]:
        return []  # the instance figures need the images: overlays

    def overlays(self, report: dict[str, Any], count: int, threads: int) -> list[tuple[str, str]]:
        from edgeseg.tasks.instance.overlay import overlay_figures

        return overlay_figures(report, self.run, self.net, self.cfg, count, threads)

    def markdown(self, r: dict[str, Any], gates: list[str]) -> str:
        """report.md: the instance figures per export (``gates``: CI gate lines; none for instance runs)."""
        m, hw = r["model"], r["hardware"]
        ap = (r["training"].get("test_ap") or {}).get("mask", {}).get("AP")
        lines = [f"# edgeseg report: Mask R-CNN ({m['kwargs'].get('backbone')})", "",
                 f"- input {'x'.join(map(str, m['input']))}, {m['params'] / 1e6:.2f} M params, {len(m['classes'])} "
                 f"classes ({', '.join(m['classes'][:8])})",
                 f"- trained on `{r['training']['data']}`" + (f"; test mask AP {ap:.4f}" if ap is not None else ""),
                 f"- measured on {hw['cpu']} ({hw['cores']} cores), {hw['system']}", "",
                 "| target | variant | size MB | latency median / p90 ms | parity | matched / missed / extra | "
                 "mask IoU mean (min) | box IoU mean | mask AP ref → exp | box AP ref → exp |",
                 "|---|---|---:|---:|---|---|---:|---:|---|---|"]
        notes = []
        f = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
        for row in r["results"]:
            lat = row.get("latency") or {}
            lat_s = f"{lat['median_ms']:.1f} / {lat['p90_ms']:.1f}" if "median_ms" in lat else "not measured"
            if "median_ms" not in lat:
                notes.append(f"- {row['target']} {row['precision']}: latency not measured: "
                             f"{lat.get('not_measured') or lat.get('error', '')}")
            p = row.get("instance_parity")
            if p is None:
                lines.append(f"| {row['target']} | {row['precision']} | {row['size_bytes'] / 1e6:.2f} | {lat_s} | "
                             f"reference | — | — | — | — | — |")
                continue
            ra, ea = p.get("reference_ap") or {}, p.get("exported_ap") or {}
            lines.append(f"| {row['target']} | {row['precision']} | {row['size_bytes'] / 1e6:.2f} | {lat_s} | "
                         f"{p['status'].upper()} | {p['matched']} / {p['missed']} / {p['extra']} | "
                         f"{f(p['mask_iou_mean'])} ({f(p['mask_iou_min'])}) | {f(p['box_iou_mean'])} | "
                         f"{f(ra.get('mask'))} → {f(ea.get('mask'))} | {f(ra.get('box'))} → {f(ea.get('box'))} |")
            notes += [f"- {row['name']}: FAILED {x}" for x in p.get("failures", [])]
        if notes:
            lines += ["", "Notes:", *notes]
        lines += gates
        lines += ["", "Instance parity: every detection of the export matched to the eager PyTorch model's on the same "
                  "test images (mask IoU of matched masks pasted into the frame, box IoU, detections the export missed or "
                  "added), and COCO mask/box AP of both against the test labels. Latency: batch 1 with the export "
                  "graph's fixed counts on this CPU, not a phone.", ""]
        return "\n".join(lines)
