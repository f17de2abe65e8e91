"""The instance task: Mask R-CNN detections (boxes, scores, classes, per-box masks) of the static export graph,
checked detection by detection against torchvision's eager model (:mod:`edgeseg.tasks.instance.parity`). A run
holds ``maskrcnn.pt`` and ``export/maskrcnn-<target>-<precision>/`` (:mod:`edgeseg.tasks.instance.run`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from edgeseg.core.digest import sha256
from edgeseg.core.errors import CheckFailed
from edgeseg.tasks.base import BundleModel, ExportEntry, ReportSubject
from edgeseg.tasks.instance.run import CHECKPOINT

INPUT_RULE = ("s = {S} / max(frame height, frame width); the frame is resized (bilinear) to round(width * s) x "
              "round(height * s) (round half to even, at least 1) and drawn at the top-left of a black {S} x {S} "
              "image; boxes and masks map back to the frame by dividing input coordinates by s")
MEANING = {
    "boxes": "x1, y1, x2, y2 of each detection in input pixels (rows past num_detections are padding)",
    "scores": "detection score, sorted high to low (0 past num_detections)",
    "classes": "class index (exact integer stored as float; index into labels.txt; 0, background, never occurs)",
    "num_detections": "how many rows of boxes/scores/classes/masks are valid",
    "masks": "mask probabilities of each detection on an M x M grid over its box; paste as postprocess.paste says",
}
PASTE_RULE = ("torchvision paste_masks_in_image with padding 1: pad the M x M mask with a zero border (P = M + 2), "
              "grow the box about its centre by P / M and truncate its corners toward zero (x0, y0, x1, y1), resize "
              "the padded mask bilinearly (half-pixel centres, source clamped at 0) to (x1 - x0 + 1) x (y1 - y0 + 1) "
              "and place it at (x0, y0), clipped to the input")


class InstanceTask:
    name = "instance"
    parity_kind = "instance-parity"
    outputs = "instances"

    def owns(self, run: Path) -> bool:
        from edgeseg.train.checkpoint import CHECKPOINT_NAME

        run = Path(run)
        return run.is_dir() and (run / CHECKPOINT).is_file() and not (run / CHECKPOINT_NAME).is_file()

    def precisions(self) -> dict[str, tuple[tuple[str, ...], str]]:
        from edgeseg.tasks.instance.check import PRECISIONS

        return {n: (p, p[0]) for n, p in PRECISIONS.items()}

    def options(self, action: str) -> tuple[str, ...]:
        return ("limit", "score_threshold")

    def describe_options(self, action: str) -> str:
        return f"graph counts and instance thresholds: edgeseg maskrcnn {action} --help"

    def export(self, run: Path, pairs: list[tuple[str, str]], log: Callable[[str], None], limit: int | None = None,
               score_threshold: float = 0.3, **kw: Any) -> list[dict]:
        """Each pair exported and checked for instance parity (``kw``: graph ``counts``, ``thresholds``,
        ``max_float_macs`` of ``edgeseg maskrcnn export``)."""
        from edgeseg.tasks.instance.run import export_run

        return [export_run(run, target, precision, limit=limit or 8, score_threshold=score_threshold, log=log, **kw)
                for target, precision in pairs]

    def check(self, run: Path, pairs: list[tuple[str, str]], log: Callable[[str], None], limit: int | None = None,
              score_threshold: float = 0.3, **kw: Any) -> list[dict]:
        from edgeseg.tasks.instance.run import check_run

        return [check_run(run, target, precision, limit=limit or 8, score_threshold=score_threshold, log=log, **kw)
                for target, precision in pairs]

    def status(self, result: dict[str, Any]) -> str:
        return result["parity"]["status"]

    def to_json(self, result: dict[str, Any]) -> dict[str, Any]:
        return result

    def describe(self, result: dict[str, Any], exported: bool = False) -> str:
        from edgeseg.tasks.instance.text import describe_instance

        return describe_instance(result, exported)

    def checkpoint(self, run: Path) -> Path:
        return Path(run) / CHECKPOINT  # owns() found it; load_run refuses one that does not load safely

    def exports(self, run: Path, target: str) -> list[ExportEntry]:
        from edgeseg.tasks.instance.run import instance_exports

        return [ExportEntry(d, rec, rec.get("parity")) for d, rec in instance_exports(run, target)]

    def export_name(self, target: str, choice: str) -> str:
        return choice if choice.startswith("maskrcnn-") else f"maskrcnn-{target}-{choice.removeprefix(target + '-')}"

    def preference(self, target: str) -> Callable[[ExportEntry], Any]:
        return lambda e: (e.record["size_bytes"], e.name)

    def bundle_model(self, checkpoint: Path, name: str | None, version: str, author: str, license: str,
                     description: str, chosen: dict[str, ExportEntry | None]) -> BundleModel:
        from edgeseg.data.base import default_colors
        from edgeseg.models import count_params
        from edgeseg.tasks.instance.run import load_run

        run = Path(checkpoint).parent
        model, cfg = load_run(run)
        names = list(cfg.get("classes") or ["background", "object"])
        classes = [{"index": i, "name": c, "color": list(col)}
                   for i, (c, col) in enumerate(zip(names, default_colors(len(names))))]
        size = int(cfg["size"])
        picked = [e for e in chosen.values() if e]
        graph = picked[0].record["details"]["graph"]  # the bundle step passes at least one export
        # the mask head upsamples its RoIAlign grid twice (torchvision: 14 -> 28)
        d, m = int(graph["detections"]), 2 * int(model.roi_heads.mask_roi_pool.output_size[0])
        model_name = name or f"{run.name} maskrcnn"
        info = {"name": model_name, "version": version, "author": author, "license": license,
                "description": description or f"Instance segmentation (Mask R-CNN, {cfg['backbone']}, "
                                              f"{len(names) - 1} classes and background)", "classes": classes}
        # the score threshold the parity checks used (each record's; the app applies the same)
        score_thresholds = {float(e.record.get("score_threshold", 0.3)) for e in picked} or {0.3}
        manifest = {
            "task": "instance",
            "model": {"name": model_name, "version": version, "description": info["description"], "author": author,
                      "license": license, "architecture": "maskrcnn",
                      "architecture_options": {"backbone": cfg["backbone"]}, "params": count_params(model),
                      "checkpoint_sha256": sha256(run / CHECKPOINT)},
            "input": {"height": size, "width": size, "channels": 3, "color": "RGB", "resize": "letterbox-top-left",
                      "resize_rule": INPUT_RULE.format(S=size),
                      "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                                        "formula": "pixel / 255 (the model normalizes inside)"}},
            "classes": classes,
            "postprocess": {"detections": d, "mask_size": m, "score_threshold": max(score_thresholds),
                            "mask_threshold": 0.5, "paste": PASTE_RULE},
        }
        return BundleModel(run / CHECKPOINT, info, manifest,
                           {"size": size, "detections": d, "mask_size": m})

    def write_android(self, entry: ExportEntry, dst: Path, model: BundleModel) -> dict[str, Any]:
        from edgeseg.tasks.instance.check import load_runner
        from edgeseg.tasks.instance.static_graph import OUTPUTS

        src = entry.dir / Path(entry.record["path"]).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        sig = load_runner("tflite", dst, threads=1).tensors()
        io = {"input": {**sig["input"], "layout": "NCHW",
                        "values": "RGB / 255 (0 to 1); normalization is in the model"},
              "output": {"kind": "detections", "tensors": [{"name": n, **sig["outputs"][n], "meaning": MEANING[n]}
                                                           for n in OUTPUTS]}}
        d, m = model.context["detections"], model.context["mask_size"]
        if io["output"]["tensors"][-1]["shape"] != [1, d, m, m]:  # the file is the contract
            raise CheckFailed(f"'{src}' has masks {io['output']['tensors'][-1]['shape']}, not [1, {d}, {m}, {m}] "
                              f"as its record and the model say; export it again")
        return io

    def ios_io(self, entry: ExportEntry, model: BundleModel) -> dict[str, Any]:
        from edgeseg.tasks.instance.static_graph import OUTPUTS
        from exporters.coreml_tools import INPUT_NAME

        size, d, m = model.context["size"], model.context["detections"], model.context["mask_size"]
        shapes = {"boxes": [1, d, 4], "scores": [1, d], "classes": [1, d], "num_detections": [1],
                  "masks": [1, d, m, m]}
        return {"input": {"name": INPUT_NAME, "shape": [1, 3, size, size], "dtype": "uint8 pixels",
                          "type": "image (RGB; scaling and normalization in the model)"},
                "output": {"kind": "detections", "tensors": [{"name": n, "key": n, "shape": shapes[n],
                                                              "dtype": "float32", "meaning": MEANING[n]}
                                                             for n in OUTPUTS]},
                "deployment_target": entry.record.get("details", {}).get("deployment_target")}

    def evidence(self, entry: ExportEntry) -> dict[str, Any]:
        p = entry.parity or {}
        keys = ("status", "runtime", "images", "reference_detections", "matched", "missed", "extra",
                "mask_iou_mean", "mask_iou_min", "box_iou_mean", "box_iou_min", "max_score_diff", "reference_ap",
                "exported_ap", "thresholds")
        out = {k: p.get(k) for k in keys}
        out["status"] = out["status"] or "unchecked"
        out["reference"] = "torchvision eager Mask R-CNN (PyTorch), the export graph's counts"
        out["score_threshold"] = entry.record.get("score_threshold")
        return out

    def app_readme(self, manifest: dict[str, Any]) -> str:
        from edgeseg.tasks.instance.app_readme import render_instance_readme

        return render_instance_readme(manifest)

    def report(self, run: Path, threads: int) -> ReportSubject:
        from edgeseg.tasks.instance.report import InstanceReport

        return InstanceReport(self, run, threads)
