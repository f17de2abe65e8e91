"""``edgeseg report``: join training metrics, exports, parity and latency into report.json, report.md and a
self-contained report.html (plots and mask overlays, :mod:`edgeseg.steps.report.html`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.core.latency import measure_latency, torch_runner
from edgeseg.models import count_params
from edgeseg.train.checkpoint import load_checkpoint
from edgeseg.core.versions import hardware, package_versions

SCHEMA = "edgeseg.report/1"


def _fmt(v: Any, spec: str, none: str = "—") -> str:
    return none if v is None else format(v, spec)


def build_report(run: Path, runs: int = 20, warmup: int = 3, threads: int = 2,
                 log: Callable[[str], None] = print, budget: Path | None = None,
                 baseline: Path | None = None, max_miou_drop: float | None = None) -> dict[str, Any]:
    """Measure every export of ``run`` and write ``report.json`` and ``report.md`` into it; with ``budget``
    (YAML) and/or ``baseline`` (an earlier report.json) add their verdicts (:mod:`edgeseg.steps.report.budget`).
    ``max_miou_drop`` is a budget default for every export without its own ``max_miou_drop`` line (it makes a
    budget when there is no file)."""
    from edgeseg.steps.report.budget import check_budget, compare_baseline, load_baseline, load_budget
    from edgeseg.core.errors import UsageError
    from exporters import TARGETS, ExporterError

    limits = load_budget(budget) if budget is not None else None
    if max_miou_drop is not None:
        from edgeseg.tasks.semantic.parity import thresholds_for

        thresholds_for("fp32", max_miou_drop=max_miou_drop)  # the check's range check: names the flag
        limits = limits or {}
        limits["defaults"] = {**limits.get("defaults", {}), "max_miou_drop": float(max_miou_drop)}
    previous = load_baseline(baseline, SCHEMA) if baseline is not None else None
    ckpt = load_checkpoint(run)
    run = Path(ckpt.path).parent
    if not list((run / "export").glob("*-*/export.json")):
        raise UsageError(f"run '{run}' has no exports to report on; first: edgeseg export {run} --target tflite "
                         f"(and edgeseg check for parity)")
    model = ckpt.build_model()
    pre = ckpt.preprocess
    x = np.random.default_rng(0).standard_normal((1, 3, pre.height, pre.width)).astype(np.float32)
    params = count_params(model)
    ref_lat = measure_latency(torch_runner(model, threads), x, runs, warmup)
    rows: list[dict[str, Any]] = [{
        "name": "pytorch-fp32", "target": "pytorch", "precision": "fp32", "size_bytes": sum(v.numel() * v.element_size()
                                                                    for v in ckpt.weights.values()),
        "params": params, "latency": {**ref_lat, "runtime": f"PyTorch eager CPU, {threads} threads",
                                      "threads": threads},
        "parity": None,
    }]
    order = {"fp32": 0, "fp16": 1, "int8": 2, "palettize6": 3}
    recs = sorted((run / "export").glob("*-*/export.json"),
                  key=lambda p: (p.parent.name.split("-")[0], order.get(p.parent.name.split("-", 1)[1], 9)))
    for rec_path in recs:
        rec = json.loads(rec_path.read_text())
        target, precision = rec["target"], rec["precision"]
        parity_path = rec_path.parent / "parity.json"
        parity = json.loads(parity_path.read_text()) if parity_path.exists() else None
        row: dict[str, Any] = {"name": rec_path.parent.name, "target": target, "precision": precision,
                               "size_bytes": rec["size_bytes"],
                               "params": params, "path": rec["path"], "export_seconds": rec["seconds"],
                               "stale": rec.get("checkpoint_digest") is None, "parity": parity}
        ok, why = TARGETS[target].can_run() if target in TARGETS else (False, "unknown target")
        if ok:
            log(f"timing {target} {precision} ({runs} runs after {warmup} warm-up) ...")
            try:
                runner = TARGETS[target].load(run / rec["path"], threads=threads)
                if getattr(runner, "is_reference", False):
                    row["latency"] = {"not_measured": f"{runner.runtime} checks masks; its speed is not a "
                                                      f"device's (the Core ML runtime needs macOS)"}
                else:
                    row["latency"] = {**measure_latency(runner, x, runs, warmup), "runtime": runner.runtime,
                                      "threads": threads}
            except ExporterError as e:
                row["latency"] = {"error": str(e)}
        else:
            row["latency"] = {"not_measured": why}
        rows.append(row)
    report = {
        "schema": SCHEMA,
        "run": str(run),
        "model": {"name": ckpt.config.model, "kwargs": ckpt.config.model_kwargs, "params": params,
                  "input": [1, 3, pre.height, pre.width], "classes": list(ckpt.class_names)},
        "training": {"data": ckpt.config.data, "epochs": ckpt.config.epochs,
                     "val_miou": ckpt.metrics.get("val", {}).get("miou"),
                     "train_seconds": ckpt.metrics.get("train_seconds"), "device": ckpt.metrics.get("device")},
        "hardware": hardware(),
        "versions": package_versions(),
        "results": rows,
    }
    verdicts = []
    if limits is not None:
        lines = check_budget(report, limits)
        report["budget"] = {"file": str(budget) if budget is not None else "--max-miou-drop", "lines": lines,
                            "status": _worst(b["status"] for b in lines)}
        verdicts.append(report["budget"]["status"])
    if previous is not None:
        diff = compare_baseline(report, previous)
        report["baseline"] = {"file": str(baseline), "rows": diff,
                              "status": "failed" if any(d["regressions"] for d in diff) else "passed"}
        verdicts.append(report["baseline"]["status"])
    report["status"] = _worst(verdicts) if verdicts else "no-gates"  # nothing was gated: not a pass
    from edgeseg.core.schemas import problems

    wrong = problems(report, "report-1")
    if wrong:  # a bug of ours: a CI must never read a report that breaks its documented schema
        raise RuntimeError("report.json does not match schemas/report-1.schema.json: " + "; ".join(wrong[:5]))
    from edgeseg.core.atomic import atomic_path
    from edgeseg.steps.report.html import write_html

    # the three files as one set: each goes to a temporary name, and only when all are written are they renamed,
    # so a failure (a full disk) leaves the previous report.json/md/html together
    with atomic_path(run / "report.json") as tj, atomic_path(run / "report.md") as tm, \
            atomic_path(run / "report.html") as th:
        tj.write_text(json.dumps(report, indent=2) + "\n")
        tm.write_text(render_markdown(report))
        write_html(report, run, ckpt, th, threads=threads)
    return report


def _worst(statuses) -> str:
    statuses = list(statuses)
    for s in ("failed", "not-verified"):
        if s in statuses:
            return s
    return "passed"


def render_markdown(r: dict[str, Any]) -> str:
    """A report short enough for a pull-request comment."""
    m, tr, hw = r["model"], r["training"], r["hardware"]
    lines = [
        f"# edgeseg report: {m['name']}",
        "",
        f"- input {'x'.join(str(v) for v in m['input'])}, {m['params'] / 1e6:.2f} M params, "
        f"{len(m['classes'])} classes ({', '.join(m['classes'])})",
        f"- trained on `{tr['data']}` for {tr['epochs']} epochs"
        + (f" in {tr['train_seconds']:.0f} s" if tr.get("train_seconds") else "")
        + (f" on {tr['device']}" if tr.get("device") else "")
        + f"; val mIoU {_fmt(tr['val_miou'], '.4f')}",
        f"- measured on {hw['cpu']} ({hw['cores']} cores), {hw['system']}",
        "",
        "| target | variant | size MB | latency median / p90 ms | runtime | parity | agreement % | "
        "mask mIoU | max Δlogit | dataset mIoU (ref → exp) |",
        "|---|---|---:|---:|---|---|---:|---:|---:|---|",
    ]
    notes = []
    for row in r["results"]:
        lat = row.get("latency") or {}
        if "median_ms" in lat:
            lat_s, runtime = f"{lat['median_ms']:.1f} / {lat['p90_ms']:.1f}", lat["runtime"]
        else:
            lat_s, runtime = "not measured", "see notes"
            notes.append(f"- {row['target']} {row['precision']}: latency not measured: "
                         f"{lat.get('not_measured') or lat.get('error', '')}")
        p = row.get("parity")
        if row["target"] == "pytorch":
            status, agree, miou, dlog, ds = "reference", "—", "—", "—", "—"
        elif p is None:
            status, agree, miou, dlog, ds = "not checked", "—", "—", "—", "—"
        else:
            status = {"passed": "PASS", "failed": "FAIL", "not-verified": "NOT VERIFIED"}[p["status"]]
            agree = _fmt(p.get("pixel_agreement"), ".3f")
            miou = _fmt(p.get("mask_miou"), ".4f")
            dlog = _fmt(p.get("max_abs_logit_diff"), ".3g")
            ds = (f"{p['reference_miou']:.4f} → {p['exported_miou']:.4f} "
                  f"({p['exported_miou'] - p['reference_miou']:+.4f})"
                  if p.get("reference_miou") is not None and p.get("exported_miou") is not None else "—")
            if p["status"] == "not-verified":
                note = f"- {row['target']} {row['precision']}: not verified: {p['reason']}"
                latency_note = f"- {row['target']} {row['precision']}: latency not measured: {p['reason']}"
                if notes and notes[-1] == latency_note:  # one line when both have the same cause
                    notes[-1] = f"- {row['target']} {row['precision']}: parity not verified and latency not " \
                                f"measured: {p['reason']}"
                else:
                    notes.append(note)
            for f in p.get("failures", []):
                notes.append(f"- {row['target']} {row['precision']}: FAILED: {f}")
        variant = row["name"].split("-", 1)[1]  # precision plus -argmax / -pixels / -multiarray / -<method>
        lines.append(f"| {row['target']} | {variant} | {row['size_bytes'] / 1e6:.2f} | {lat_s} | "
                     f"{runtime} | {status} | {agree} | {miou} | {dlog} | {ds} |")
    if notes:
        lines += ["", "Notes:", *notes]
    from edgeseg.steps.report.budget import render_markdown as render_verdicts

    lines += render_verdicts((r.get("budget") or {}).get("lines") if "budget" in r else None,
                             (r.get("baseline") or {}).get("rows") if "baseline" in r else None)
    refs = sorted({(row.get("parity") or {}).get("reference", "PyTorch") for row in r["results"]
                   if row.get("parity")} - {"PyTorch"})
    reference = f"the reference ({', '.join(refs)}: the imported ONNX file itself)" if refs else "the PyTorch model"
    lines += ["", f"Parity: the exported model and {reference} run on the same preprocessed test images; "
              "agreement = % of pixels with the same argmax class, mask mIoU = mIoU of the exported masks "
              "against the reference masks, both at the model's input size. Dataset mIoU: against the test labels "
              "at each label file's own size (the exported mask mapped back onto the frame as an app does) where "
              "the parity record says `task_resolution: label`, else at the model's size. Latency: batch 1 on "
              "this CPU, not a phone.", ""]
    return "\n".join(lines)
