"""Budgets and baselines that let an app's CI block a model: ``edgeseg report --budget --baseline``.

Budget file (YAML)::

    defaults:                  # apply to every export unless overridden
      min_agreement: 98        # % of pixels with the PyTorch model's class
    exports:                   # keyed by export name: <target>-<precision>[-argmax][-multiarray]
      tflite-int8:
        max_size_mb: 4
        max_latency_ms: 10     # median at the report's --threads
        max_miou_drop: 0.01    # dataset mIoU, PyTorch minus export
        max_class_drop: 0.02   # IoU of the class that fell most, PyTorch minus export
      coreml-fp16:
        max_size_mb: 8

A budget line is ``passed``, ``failed`` or ``not-verified`` (the figure could not be measured here, e.g. Core ML
latency off macOS) — never passed without a measurement. A baseline is an earlier ``report.json``: the diff
table shows size, latency, agreement and dataset mIoU changes per export, and fails when one regresses by more
than its tolerance.
"""

from __future__ import annotations

import math

import json
from pathlib import Path
from typing import Any

from edgeseg.core.errors import UsageError
from edgeseg.core.registry import suggest

LIMITS = ("max_size_mb", "max_latency_ms", "min_agreement", "max_miou_drop", "max_class_drop")
TOLERANCES = {"size_pct": 5.0, "latency_pct": 15.0, "agreement_pts": 0.5, "miou": 0.01}


def load_budget(path: Path) -> dict[str, dict[str, float]]:
    """``{export name or "defaults": {limit: value}}`` from a budget YAML; every bad key is named."""
    from edgeseg.train.config import read_yaml_mapping

    path = Path(path)
    data = read_yaml_mapping(path, "--budget")
    for k in data:
        if k not in ("defaults", "exports"):
            raise UsageError(f"--budget '{path}': unknown key '{k}'{suggest(k, ['defaults', 'exports'])}; "
                             f"use defaults and exports")
    out: dict[str, dict[str, float]] = {}
    exports = data.get("exports") or {}
    if not isinstance(exports, dict):
        raise UsageError(f"--budget '{path}': 'exports' must map export names (e.g. tflite-int8) to limits, "
                         f"got {type(exports).__name__}")
    sections = [("defaults", data.get("defaults") or {})] + list(exports.items())
    for name, limits in sections:
        if not isinstance(limits, dict):
            raise UsageError(f"--budget '{path}': '{name}' must map limits to numbers")
        for k, v in limits.items():
            if k not in LIMITS:
                raise UsageError(f"--budget '{path}': '{name}' has unknown limit '{k}'{suggest(k, list(LIMITS))}; "
                                 f"limits are {', '.join(LIMITS)}")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise UsageError(f"--budget '{path}': '{name}.{k}' must be a finite number >= 0, got {v!r}")
        out[str(name)] = {k: float(v) for k, v in limits.items()}
    return out


def check_budget(report: dict[str, Any], budget: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One line per (export, limit): the measured value, the limit and the status."""
    names = {row["name"] for row in report["results"] if row["target"] != "pytorch"}
    for name in budget:
        if name != "defaults" and name not in names:
            raise UsageError(f"--budget names export '{name}', which this run does not have{suggest(name, sorted(names))}; "
                             f"exports: {', '.join(sorted(names)) or 'none'}")
    lines = []
    for row in report["results"]:
        if row["target"] == "pytorch":
            continue
        limits = {**budget.get("defaults", {}), **budget.get(row["name"], {})}
        parity, lat = row.get("parity") or {}, row.get("latency") or {}
        for key, limit in limits.items():
            value, why = _measure(key, row, parity, lat)
            if value is None:
                status = "not-verified"
            elif key.startswith("max_"):
                status = "passed" if value <= limit else "failed"
            else:
                status = "passed" if value >= limit else "failed"
            lines.append({"export": row["name"], "limit": key, "budget": limit, "value": value, "status": status,
                          **({"reason": why} if why else {})})
    return lines


def _measure(key: str, row: dict, parity: dict, lat: dict) -> tuple[float | None, str]:
    if key == "max_size_mb":
        return row["size_bytes"] / 1e6, ""
    if key == "max_latency_ms":
        if "median_ms" in lat:
            return float(lat["median_ms"]), ""
        return None, lat.get("not_measured") or lat.get("error") or "latency not measured"
    if parity.get("status") not in ("passed", "failed"):
        return None, parity.get("reason") or "parity not checked (run edgeseg check)"
    if key == "min_agreement":
        return float(parity["pixel_agreement"]), ""
    if key == "max_class_drop":
        changes = [v for v in (parity.get("iou_change") or {}).values() if v is not None]
        if not changes:
            return None, "no class IoU: the check's images have no masks"
        return max(0.0, -min(changes)), ""
    if parity.get("reference_miou") is None or parity.get("exported_miou") is None:
        return None, "no dataset mIoU: the check's images have no masks"
    return float(parity["reference_miou"] - parity["exported_miou"]), ""


def load_baseline(path: Path, schema: str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--baseline '{path}' does not exist") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"--baseline '{path}' is not JSON ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise UsageError(f"--baseline '{path}' has schema {data.get('schema') if isinstance(data, dict) else None!r}, "
                         f"not {schema!r}; compare reports of the same schema (regenerate the baseline)")
    return data


def compare_baseline(report: dict[str, Any], baseline: dict[str, Any],
                     tolerances: dict[str, float] = TOLERANCES) -> list[dict[str, Any]]:
    """Per export in both reports: old/new size, latency, agreement and dataset mIoU, and regressions."""
    old = {r.get("name", f"{r['target']}-{r['precision']}"): r for r in baseline.get("results", [])}
    rows = []
    for row in report["results"]:
        prev = old.get(row["name"])
        if prev is None:
            continue
        d: dict[str, Any] = {"export": row["name"], "regressions": []}
        d["size_mb"] = (prev["size_bytes"] / 1e6, row["size_bytes"] / 1e6)
        if d["size_mb"][1] > d["size_mb"][0] * (1 + tolerances["size_pct"] / 100):
            d["regressions"].append(f"size {d['size_mb'][0]:.2f} -> {d['size_mb'][1]:.2f} MB")
        a, b = (prev.get("latency") or {}).get("median_ms"), (row.get("latency") or {}).get("median_ms")
        d["latency_ms"] = (a, b)
        if a is not None and b is not None and b > a * (1 + tolerances["latency_pct"] / 100):
            d["regressions"].append(f"latency {a:.2f} -> {b:.2f} ms")
        pa, pb = prev.get("parity") or {}, row.get("parity") or {}
        d["agreement"] = (pa.get("pixel_agreement"), pb.get("pixel_agreement"))
        if None not in d["agreement"] and d["agreement"][1] < d["agreement"][0] - tolerances["agreement_pts"]:
            d["regressions"].append(f"agreement {d['agreement'][0]:.3f} -> {d['agreement'][1]:.3f} %")
        d["exported_miou"] = (pa.get("exported_miou"), pb.get("exported_miou"))
        if None not in d["exported_miou"] and d["exported_miou"][1] < d["exported_miou"][0] - tolerances["miou"]:
            d["regressions"].append(f"dataset mIoU {d['exported_miou'][0]:.4f} -> {d['exported_miou'][1]:.4f}")
        rows.append(d)
    return rows


def render_markdown(budget_lines: list[dict] | None, baseline_rows: list[dict] | None) -> list[str]:
    lines: list[str] = []
    if budget_lines is not None:
        lines += ["", "## Budget", "", "| export | limit | budget | measured | status |", "|---|---|---:|---:|---|"]
        for b in budget_lines:
            value = "—" if b["value"] is None else f"{b['value']:.4g}"
            status = {"passed": "PASS", "failed": "FAIL", "not-verified": f"NOT VERIFIED ({b.get('reason', '')})"}
            lines.append(f"| {b['export']} | {b['limit']} | {b['budget']:g} | {value} | {status[b['status']]} |")
    if baseline_rows is not None:
        def pair(p, spec):
            return " → ".join("—" if v is None else format(v, spec) for v in p)

        lines += ["", "## Against the baseline", "", "| export | size MB | latency ms | agreement % | dataset mIoU | "
                  "regressions |", "|---|---|---|---|---|---|"]
        for d in baseline_rows:
            lines.append(f"| {d['export']} | {pair(d['size_mb'], '.2f')} | {pair(d['latency_ms'], '.2f')} | "
                         f"{pair(d['agreement'], '.3f')} | {pair(d['exported_miou'], '.4f')} | "
                         f"{'; '.join(d['regressions']) or 'none'} |")
    return lines
