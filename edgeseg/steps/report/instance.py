"""``edgeseg report`` on a Mask R-CNN run: size, latency and instance parity of every export.

The same ``report.json`` schema as a semantic run (``edgeseg.report/1``, ``"task": "instance"``): one row per
export with size and latency; a row's semantic ``parity`` is null and its ``instance_parity`` holds the figures
``export``/``check`` measured (matched mask and box IoU, missed/extra detections, mask/box AP of both). The
markdown table shows them; ``report.html`` adds plots and instance-mask overlays
(:mod:`edgeseg.tasks.instance.overlay`). Latency: batch 1, the export graph's fixed counts, on this CPU; the Core ML
program is executed by reference on Linux (its speed is not a device's, so it is not reported).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.core.errors import DataError, UsageError

ORDER = {"fp32": 0, "fp16": 1, "int8": 2, "int8-weights": 3, "int8-mixed": 4}


def build_instance_report(run: Path, runs: int = 20, warmup: int = 3, threads: int = 2,
                          log: Callable[[str], None] = print, overlays: int = 3) -> dict[str, Any]:
    """Measure every export of a Mask R-CNN run and write ``report.json``, ``report.md`` and ``report.html``
    (instance overlays of the first ``overlays`` test images per checked export) into it."""
    import torch

    from edgeseg.core.atomic import atomic_path
    from edgeseg.core.latency import measure_latency
    from edgeseg.tasks.instance.check import GraphCounts, load_runner
    from edgeseg.tasks.instance.overlay import write_instance_html
    from edgeseg.tasks.instance.run import instance_exports, load_run
    from edgeseg.tasks.instance.static_graph import build_static
    from edgeseg.models import count_params
    from edgeseg.core.schemas import problems as schema_problems
    from edgeseg.core.versions import hardware, package_versions
    from exporters import ExporterError

    run = Path(run)
    recs = sorted(instance_exports(run), key=lambda e: (e[0].name.split("-")[1],
                                                        ORDER.get(e[0].name.split("-", 2)[2], 9)))
    if not recs:
        raise UsageError(f"run '{run}' has no exports to report on; first: edgeseg export {run} --target tflite")
    model, cfg = load_run(run)
    size = int(cfg["size"])
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)  # pixels / 255, as the graph takes
    params = count_params(model)
    graph = build_static(model, size, **GraphCounts().to_json())

    def eager(inp: np.ndarray):
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                return graph(torch.from_numpy(inp))
        finally:
            torch.set_num_threads(prev)

    log(f"timing PyTorch (export graph, {runs} runs) ...")
    rows: list[dict[str, Any]] = [{
        "name": "pytorch-fp32", "target": "pytorch", "precision": "fp32", "params": params,
        "size_bytes": sum(v.numel() * v.element_size() for v in model.state_dict().values()),
        "latency": {**measure_latency(eager, x, runs, warmup), "runtime": f"PyTorch eager CPU (export graph), "
                    f"{threads} threads", "threads": threads},
        "parity": None}]
    for exp_dir, rec in recs:
        target, precision = rec["target"], rec["precision"]
        if rec["parity"] is None:
            raise DataError(f"'{exp_dir}' has no parity.json; check it again: edgeseg maskrcnn check {run} "
                            f"--target {target} --precision {precision}")
        path = exp_dir / Path(rec["path"]).name  # older records hold the path as the exporter was called
        row: dict[str, Any] = {"name": exp_dir.name, "target": target, "precision": precision,
                               "size_bytes": int(rec["size_bytes"]), "params": params,
                               "path": str(path.relative_to(run)), "export_seconds": rec.get("export_seconds", 0.0),
                               "parity": None, "instance_parity": rec["parity"],
                               "score_threshold": float(rec.get("score_threshold", 0.3)),
                               "graph": {k: int(rec["details"]["graph"][k]) for k in GraphCounts().to_json()}}
        try:
            runner = load_runner(target, path, threads)
            if target == "coreml" and "reference execution" in getattr(runner, "runtime", ""):
                row["latency"] = {"not_measured": f"{runner.runtime} checks instances; its speed is not a "
                                                  f"device's (the Core ML runtime needs macOS)"}
            else:
                log(f"timing {target} {precision} ({runs} runs after {warmup} warm-up) ...")
                row["latency"] = {**measure_latency(runner, x, runs, warmup),
                                  "runtime": getattr(runner, "runtime", target), "threads": threads}
        except ExporterError as e:
            row["latency"] = {"error": str(e)}
        rows.append(row)
    statuses = {r["instance_parity"]["status"] for r in rows[1:]}
    status = "failed" if "failed" in statuses else "not-verified" if "not-verified" in statuses else "passed"
    report = {"schema": "edgeseg.report/1", "task": "instance", "run": str(run),
              "model": {"name": "maskrcnn", "kwargs": {"backbone": cfg.get("backbone")}, "params": params,
                        "input": [1, 3, size, size], "classes": list(cfg.get("classes") or ["object"])},
              "training": {"data": cfg["data"], "epochs": cfg.get("epochs"), "val_miou": None,
                           "test_ap": _training_ap(run)},
              "hardware": hardware(), "versions": package_versions(), "results": rows, "status": status,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    problems = schema_problems(report, "report-1")
    if problems:  # a bug in this module, not the user's input
        raise AssertionError(f"instance report does not match edgeseg.report/1: {problems}")
    log(f"drawing instance overlays of {overlays} test images per export ...")
    # the three files are renamed into place together: a failure leaves the previous report.json/md/html
    with atomic_path(run / "report.json") as tj, atomic_path(run / "report.md") as tm, \
            atomic_path(run / "report.html") as th:
        tj.write_text(json.dumps(report, indent=2))
        tm.write_text(render_markdown(report))
        write_instance_html(report, run, model, cfg, th, overlays, threads)
    return report


def _training_ap(run: Path) -> dict[str, Any] | None:
    from edgeseg.tasks.instance.run import training_record

    return (training_record(run) or {}).get("ap")


def render_markdown(r: dict[str, Any]) -> str:
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
    lines += ["", "Instance parity: every detection of the export matched to the eager PyTorch model's on the same "
              "test images (mask IoU of matched masks pasted into the frame, box IoU, detections the export missed or "
              "added), and COCO mask/box AP of both against the test labels. Latency: batch 1 with the export "
              "graph's fixed counts on this CPU, not a phone.", ""]
    return "\n".join(lines)
