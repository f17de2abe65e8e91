"""What ``edgeseg report`` measures on a semantic run: PyTorch and every export timed on one input, parity from each
export's parity.json, per-class IoU changes, and mask overlays of PyTorch vs each checked export."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.core.errors import UsageError, worst_status
from edgeseg.core.html import colorize, png, table_row
from edgeseg.tasks.base import ExportEntry, Task

ORDER = {"fp32": 0, "fp16": 1, "int8": 2, "palettize6": 3}


def _fmt(v: Any, spec: str, none: str = "—") -> str:
    return none if v is None else format(v, spec)


def _worst(parity: dict[str, Any]) -> str:
    """'<class> <change in points>' of a parity record's worst class, '—' without one (no labels, older records)."""
    w = parity.get("worst_class")
    return "—" if not w else f"{w['name']} {w['change'] * 100:+.2f} pt"


class SemanticReport:
    """:class:`~edgeseg.tasks.base.ReportSubject` of a semantic run."""

    def __init__(self, task: Task, run: Path, threads: int) -> None:
        self.task = task
        from edgeseg.models import count_params
        from edgeseg.train.checkpoint import load_checkpoint

        self.ckpt = ckpt = load_checkpoint(run)
        self.run = Path(ckpt.path).parent
        self.net = ckpt.build_model()
        pre = ckpt.preprocess
        self.example = np.random.default_rng(0).standard_normal((1, 3, pre.height, pre.width)).astype(np.float32)
        self.params = count_params(self.net)
        self.model = {"name": ckpt.config.model, "kwargs": ckpt.config.model_kwargs, "params": self.params,
                      "input": [1, 3, pre.height, pre.width], "classes": list(ckpt.class_names)}
        self.training = {"data": ckpt.config.data, "epochs": ckpt.config.epochs,
                         "val_miou": ckpt.metrics.get("val", {}).get("miou"),
                         "train_seconds": ckpt.metrics.get("train_seconds"), "device": ckpt.metrics.get("device")}
        self.fields: dict[str, Any] = {}

    def reference_row(self, runs: int, warmup: int, threads: int) -> dict[str, Any]:
        from edgeseg.core.latency import measure_latency, torch_runner

        lat = measure_latency(torch_runner(self.net, threads), self.example, runs, warmup)
        return {"name": "pytorch-fp32", "target": "pytorch", "precision": "fp32",
                "size_bytes": sum(v.numel() * v.element_size() for v in self.ckpt.weights.values()),
                "params": self.params, "latency": {**lat, "runtime": f"PyTorch eager CPU, {threads} threads",
                                                   "threads": threads},
                "parity": None}

    def entries(self) -> list[ExportEntry]:
        found = self.task.exports(self.run, "*")
        if not found:
            raise UsageError(f"run '{self.run}' has no exports to report on; first: edgeseg export {self.run} --target "
                             f"tflite (and edgeseg check for parity)")
        return sorted(found, key=lambda e: (e.name.split("-")[0], ORDER.get(e.name.split("-", 1)[1], 9)))

    def row(self, entry: ExportEntry) -> dict[str, Any]:
        rec = entry.record
        row = {"name": entry.name, "target": rec["target"], "precision": rec["precision"],
               "size_bytes": rec["size_bytes"], "params": self.params, "path": rec["path"],
               "export_seconds": rec["seconds"], "stale": rec.get("checkpoint_digest") is None,
               "parity": entry.parity}
        ladder = rec.get("details", {}).get("ladder")
        if ladder:  # the default int8 says what it did
            row["int8_ladder"] = {"chosen": ladder["chosen"], "rung": ladder["rung"], "why": ladder["why"],
                                  "tried": [{"name": t["name"], "rung": t["rung"], "passed": t["passed"],
                                             "pixel_agreement": t["validation"]["pixel_agreement"],
                                             "mask_miou": t["validation"]["mask_miou"],
                                             "latency_ms": t["latency_ms"]} for t in ladder["tried"]]}
        if rec.get("details", {}).get("delegation"):  # ExecuTorch: what the delegate runs, what falls back
            from exporters.executorch import delegation_summary

            row["delegation"] = delegation_summary(rec["details"])
        return row

    def runner(self, entry: ExportEntry, threads: int) -> tuple[Callable[[np.ndarray], Any] | None, str]:
        from exporters import TARGETS

        target = entry.record["target"]
        ok, why = TARGETS[target].can_run() if target in TARGETS else (False, "unknown target")
        return (TARGETS[target].load(self.run / entry.record["path"], threads=threads), "") if ok else (None, why)

    def status(self, rows: list[dict[str, Any]], verdicts: list[str]) -> str:
        return worst_status(verdicts) if verdicts else "no-gates"  # nothing was gated: not a pass

    def table(self, report: dict[str, Any]) -> tuple[str, tuple[str, ...], list[str]]:
        m = report["model"]
        rows = []
        for r in report["results"]:
            p, lat = r.get("parity") or {}, r.get("latency") or {}
            cells = [r["name"], f"{r['size_bytes'] / 1e6:.2f}",
                     f"{lat['median_ms']:.2f}" if "median_ms" in lat else "not measured",
                     p.get("status", "reference" if r["target"] == "pytorch" else "not checked"),
                     "" if p.get("pixel_agreement") is None else f"{p['pixel_agreement']:.3f}",
                     "" if p.get("mask_miou") is None else f"{p['mask_miou']:.4f}", _worst(p),
                     lat.get("runtime", "")]
            rows.append(table_row(cells))
        gates = ""
        if "budget" in report or "baseline" in report:
            gates = f"<p>CI gates: <b>{html.escape(report.get('status', ''))}</b> (details in report.json)</p>"
        intro = (f"<p>input {'x'.join(map(str, m['input']))}, {m['params'] / 1e6:.2f} M params, classes: "
                 f"{html.escape(', '.join(m['classes']))}</p>\n{gates}")
        return intro, ("export", "size MB", "median ms", "parity", "agreement %", "mask mIoU", "worst class (IoU Δ)",
                       "runtime"), rows

    def figures(self, report: dict[str, Any]) -> list[tuple[str, str]]:
        """One bar chart per checked export: every class's IoU against the labels, PyTorch's beside the export's."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        classes, out = report["model"]["classes"], []
        for row in report["results"]:
            p = row.get("parity") or {}
            ref, exp = p.get("reference_class_iou"), p.get("exported_class_iou")
            if not ref or not exp:
                continue
            x = np.arange(len(classes))
            fig, ax = plt.subplots(figsize=(7, 3.2))
            ax.bar(x - 0.2, [ref.get(c) or 0.0 for c in classes], 0.4, label="PyTorch", color="#9e9e9e")
            ax.bar(x + 0.2, [exp.get(c) or 0.0 for c in classes], 0.4, label=row["name"], color="#4c78a8")
            worst = p.get("worst_class")
            if worst is not None and worst["name"] in classes:
                i = classes.index(worst["name"])
                ax.annotate(f"{worst['change'] * 100:+.2f} pt", (i + 0.2, exp.get(worst["name"]) or 0.0),
                            textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7, color="#c0392b")
            ax.set_xticks(x, classes, rotation=30, ha="right")
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("IoU vs test labels")
            ax.legend(fontsize=7)
            out.append((f"Per-class IoU: {row['name']}", png(fig)))
        return out

    def overlays(self, report: dict[str, Any], count: int, threads: int) -> list[tuple[str, str]]:
        """One figure per checked export: input | PyTorch | export | disagreement, for ``count`` test images."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from edgeseg.core.latency import torch_runner
        from edgeseg.data import open_split
        from exporters import TARGETS, ExporterError

        test = open_split(self.ckpt.config.data, "test", self.ckpt.config.image_size)
        n = min(count, len(test))
        if n == 0:
            return []
        pre = self.ckpt.preprocess
        raw = [test[i][0] for i in range(n)]
        x = np.stack([pre.image(img) for img in raw])
        shown = [pre.resize_image(img) for img in raw]
        colors = np.array([c.color for c in self.ckpt.classes], np.uint8)
        ref_model, ref_name = self.ckpt.reference_model()
        ref = torch_runner(ref_model, threads)(x).argmax(1)
        ref_name = "PyTorch" if ref_name == "PyTorch" else "reference (ONNX)"
        out = []
        for row in report["results"]:
            if row["target"] == "pytorch" or (row.get("parity") or {}).get("status") not in ("passed", "failed"):
                continue
            try:
                y = TARGETS[row["target"]].load(self.run / row["path"], threads=threads)(x)
            except ExporterError:
                continue
            em = y if y.ndim == 3 else y.argmax(1)
            fig, axes = plt.subplots(n, 4, figsize=(8, 2.1 * n), squeeze=False)
            for i in range(n):
                diff = np.repeat((0.6 * shown[i].mean(-1, keepdims=True)).astype(np.uint8), 3, -1)
                diff[ref[i] != em[i]] = (230, 25, 25)
                for ax, im, title in zip(axes[i], (shown[i], colorize(ref[i], colors), colorize(em[i], colors), diff),
                                         ("input", ref_name, row["name"], f"disagree {(ref[i] != em[i]).mean():.2%}")):
                    ax.imshow(im)
                    ax.set_title(title, fontsize=8)
                    ax.axis("off")
            out.append((f"Masks: {row['name']}", png(fig)))
        return out

    def markdown(self, r: dict[str, Any], gates: list[str]) -> str:
        """A report short enough for a pull-request comment; ``gates``: the CI gates' lines (budget, baseline)."""
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
            "mask mIoU | max Δlogit | dataset mIoU (ref → exp) | worst class (IoU Δ) |",
            "|---|---|---:|---:|---|---|---:|---:|---:|---|---|",
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
                status, agree, miou, dlog, ds, worst = "reference", "—", "—", "—", "—", "—"
            elif p is None:
                status, agree, miou, dlog, ds, worst = "not checked", "—", "—", "—", "—", "—"
            else:
                worst = _worst(p)
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
                         f"{runtime} | {status} | {agree} | {miou} | {dlog} | {ds} | {worst} |")
        for row in r["results"]:
            lad = row.get("int8_ladder")
            if lad:
                tried = "; ".join(f"{t['name']} {t['pixel_agreement']:.3f} % / {t['mask_miou']:.4f} / "
                                  f"{t['latency_ms']:.2f} ms{'' if t['passed'] else ' (fails)'}" for t in lad["tried"])
                notes.append(f"- {row['name']}: the int8 ladder kept **{lad['chosen']}** ({lad['why']}); on the "
                             f"validation split (agreement / mask mIoU / fastest of 10 runs): {tried}")
        if notes:
            lines += ["", "Notes:", *notes]
        lines += _class_table(r)
        lines += _paths_table(r)
        lines += _delegation_table(r)
        lines += gates
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


def _class_table(r: dict[str, Any]) -> list[str]:
    """Every class's IoU against the test labels: PyTorch's (from the first record that has it) and each checked
    export's, with the change in points where it fell most."""
    checked = [(row["name"], row["parity"]) for row in r["results"]
               if (row.get("parity") or {}).get("exported_class_iou")]
    if not checked:
        return []
    ref = checked[0][1]["reference_class_iou"]
    lines = ["", "## Per-class IoU against the test labels", "",
             "| class | PyTorch | " + " | ".join(name for name, _ in checked) + " |",
             "|---|---:|" + "---:|" * len(checked)]
    for c in r["model"]["classes"]:
        cells = []
        for _, p in checked:
            e, d = p["exported_class_iou"].get(c), (p.get("iou_change") or {}).get(c)
            mark = "**" if (p.get("worst_class") or {}).get("name") == c and d is not None and d < 0 else ""
            cells.append("—" if e is None else f"{mark}{e:.4f} ({d * 100:+.2f}){mark}" if d is not None else f"{e:.4f}")
        lines.append(f"| {c} | {_fmt(ref.get(c), '.4f')} | " + " | ".join(cells) + " |")
    lines += ["", "In brackets: the change in IoU points from PyTorch; bold: the export's worst class (the per-class "
              "gate, `--max-class-drop`, fails an export whose worst class falls by more than its limit)."]
    return lines


def _delegation_table(r: dict[str, Any]) -> list[str]:
    """Each ExecuTorch export's delegation: XNNPACK partitions, delegated ops, and every op left to the portable
    kernels (a silent fallback is the first thing to look for when a .pte is slow on the phone)."""
    rows = [(row["name"], row["delegation"]) for row in r["results"] if row.get("delegation")]
    if not rows:
        return []
    from exporters.executorch import fallback_text

    lines = ["", "## ExecuTorch delegation (XNNPACK)", "",
             "| export | partitions | ops in XNNPACK | ops on portable kernels | constant-only nodes |",
             "|---|---:|---:|---|---:|"]
    for name, d in rows:
        fallback = fallback_text(d)
        lines.append(f"| {name} | {d['partitions']} | {d['delegated_ops']} | {d['fallback_ops']} ({fallback}) | "
                     f"{d.get('constant_ops', 0)} |")
    lines += ["", "Ops in XNNPACK count the lowered graph's nodes (quantize/dequantize pairs of an int8 file "
              "included); constant-only nodes read no input (copies of scalar constants): the portable kernels run "
              "them on every call, on a few bytes."]
    return lines


def kernel_paths(parity: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The kernel paths a TFLite check ran (``check --device arm64`` / ``--kernels``), in check order."""
    return list((parity or {}).get("kernel_paths") or [])


def _paths_table(r: dict[str, Any]) -> list[str]:
    """Every kernel path each TFLite export was checked on: where, which kernels, gated or not, parity, and
    whether its outputs are bit for bit the host XNNPACK's."""
    rows = [(row["name"], p) for row in r["results"] for p in kernel_paths(row.get("parity"))]
    if not rows:
        return []
    lines = ["", "## Kernel paths (LiteRT CPU kernels, host and emulated arm64)", "",
             "| export | path | gated | parity | agreement % | mask mIoU | max Δlogit | bit-exact vs x86-64 XNNPACK | "
             "machine (CPU features) |", "|---|---|---|---|---:|---:|---:|---|---|"]
    for name, p in rows:
        feats = p.get("cpu_features") or []
        cpu = p.get("machine") or ""
        if feats:
            cpu += " (" + ", ".join(f for f in ("asimddp", "asimdhp", "i8mm", "sve") if f in feats) + ")" \
                if any(f in feats for f in ("asimddp", "asimdhp", "i8mm", "sve")) else " (no dot-product, no fp16)"
        lines.append(f"| {name} | {p['path']} | {'yes' if p['gated'] else 'no'} | {p['status']} | "
                     f"{_fmt(p.get('pixel_agreement'), '.3f')} | {_fmt(p.get('mask_miou'), '.4f')} | "
                     f"{_fmt(p.get('max_abs_logit_diff'), '.3g')} | {'yes' if p['bit_exact_vs_host_xnnpack'] else 'no'} | "
                     f"{cpu} |")
    lines += ["", "Gated paths decide the export's verdict (`check --gate-kernels`, default xnnpack: what the "
              "bundle's LiteRT and MediaPipe code runs); the others are shown. arm64 paths run LiteRT's aarch64 "
              "build under qemu user-mode emulation (`check --device arm64`)."]
    return lines
