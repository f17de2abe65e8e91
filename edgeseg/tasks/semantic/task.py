"""The semantic task: per-pixel class scores (``logits``) or an in-graph class map, checked mask by mask against
PyTorch (:mod:`edgeseg.tasks.semantic.parity`). A run holds ``checkpoint.pt`` (a self-describing
:class:`~edgeseg.train.checkpoint.Checkpoint`) and ``export/<target>-<precision>[-variant]/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from edgeseg.core.digest import sha256
from edgeseg.tasks.base import BundleModel, ExportEntry, ReportSubject, read_json
from edgeseg.train.checkpoint import CHECKPOINT_NAME

# input kinds an app feeds directly (camera pixels) come first when the bundle picks an export itself
PREFERRED_INPUT = {"tflite": "pixels", "coreml": "image", "executorch": "image"}


class SemanticTask:
    name = "semantic"
    parity_kind = "parity"
    outputs = "masks"

    def owns(self, run: Path) -> bool:
        return (Path(run) / CHECKPOINT_NAME).is_file()

    def precisions(self) -> dict[str, tuple[tuple[str, ...], str]]:
        from exporters import TARGETS

        return {n: (t.precisions, t.default_precision) for n, t in TARGETS.items()}

    def options(self, action: str) -> tuple[str, ...]:
        if action == "export":
            return ("calibration", "weights", "output", "input_kind", "deployment_target", "int8_route",
                    "max_float_macs")
        return ("min_agreement", "min_mask_miou", "max_miou_drop", "max_class_drop", "limit", "threads", "compute_units", "output",
                "input_kind", "data", "device", "arm_cpus", "kernels", "gate_kernels")

    def describe_options(self, action: str) -> str:
        return f"see edgeseg {action} --help"

    def export(self, run: Path, pairs: list[tuple[str, str]], log: Callable[[str], None], **opts: Any) -> list[dict]:
        from edgeseg.tasks.semantic.run import export_runs

        weights = opts.pop("weights", "auto")
        return export_runs(run, pairs, log=log, weights=None if weights == "auto" else weights, **opts)

    def check(self, run: Path, pairs: list[tuple[str, str]], log: Callable[[str], None], **opts: Any) -> list[Any]:
        from edgeseg.tasks.semantic.run import check_runs

        return check_runs(run, pairs, log=log, **opts)

    def status(self, result: Any) -> str:
        return result.status

    def to_json(self, result: Any) -> dict[str, Any]:
        return result.to_json()

    def describe(self, result: Any, exported: bool = False) -> str:
        from edgeseg.tasks.semantic.text import describe_parity

        return describe_parity(result)

    def checkpoint(self, run: Path) -> Path:
        from edgeseg.train.checkpoint import resolve_checkpoint

        return resolve_checkpoint(run)

    def exports(self, run: Path, target: str) -> list[ExportEntry]:
        out = []
        for rec_path in sorted((Path(run) / "export").glob(f"{target}-*/export.json")):
            fix = f"export it again with: edgeseg export {run} --target {rec_path.parent.name.split('-')[0]}"
            rec = read_json(rec_path, "export record", fix)
            parity_path = rec_path.parent / "parity.json"
            parity = read_json(parity_path, "parity record", fix) if parity_path.exists() else None
            paths = _kernel_paths(rec_path.parent, rec, Path(run))
            if parity is not None and paths:
                parity = {**parity, "kernel_paths": paths}
            out.append(ExportEntry(rec_path.parent, rec, parity))
        return out

    def export_name(self, target: str, choice: str) -> str:
        return choice if choice.startswith(f"{target}-") else f"{target}-{choice}"

    def preference(self, target: str) -> Callable[[ExportEntry], Any]:
        pref = PREFERRED_INPUT[target]
        return lambda e: (e.record.get("details", {}).get("input", "image") != pref, e.record["size_bytes"], e.name)

    def bundle_model(self, checkpoint: Path, name: str | None, version: str, author: str, license: str,
                     description: str, chosen: dict[str, ExportEntry | None]) -> BundleModel:
        from edgeseg.data.transforms import RESIZE_RULES
        from edgeseg.models import count_params
        from edgeseg.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        classes = [{"index": i, "name": c.name, "color": list(c.color)} for i, c in enumerate(ckpt.classes)]
        model_name = name or f"{Path(ckpt.path).parent.name} {ckpt.config.model}"
        info = {"name": model_name, "version": version, "author": author, "license": license,
                "description": description or f"Semantic segmentation ({ckpt.config.model}, {len(classes)} classes) "
                                              f"made with edgeseg", "classes": classes}
        pre = ckpt.preprocess
        manifest = {
            "model": {"name": model_name, "version": version, "description": info["description"], "author": author,
                      "license": license, "architecture": ckpt.config.model,
                      "architecture_options": ckpt.config.model_kwargs, "params": count_params(ckpt.build_model()),
                      "checkpoint_sha256": sha256(ckpt.path)},
            "input": {"height": pre.height, "width": pre.width, "channels": 3, "color": "RGB",
                      "resize": pre.resize, "resize_rule": f"H x W = {pre.height} x {pre.width}: "
                                                            + RESIZE_RULES[pre.resize],
                      "normalization": {"mean": list(pre.mean), "std": list(pre.std),
                                        "formula": "(pixel / 255 - mean) / std"}},
            "classes": classes,
        }
        return BundleModel(ckpt.path, info, manifest, {})

    def write_android(self, entry: ExportEntry, dst: Path, model: BundleModel) -> dict[str, Any]:
        from exporters import tflite_metadata
        from exporters.tflite import tensor_types

        rec, info = entry.record, model.info
        src = Path(model.checkpoint).parent / rec["path"]
        edgeseg_md = tflite_metadata.edgeseg_info(src.read_bytes())
        pixels = edgeseg_md.get("input") == "pixels"
        pre = rec["preprocess"]
        mean = (0.0,) if pixels else tuple(m * 255.0 for m in pre["mean"])
        std = (1.0,) if pixels else tuple(s * 255.0 for s in pre["std"])
        output = rec.get("details", {}).get("output", "logits")
        data = tflite_metadata.populate(src.read_bytes(), tflite_metadata.ModelInfo(
            name=info["name"], labels=tuple(c["name"] for c in info["classes"]), mean=mean, std=std,
            description=info["description"], version=info["version"], author=info["author"],
            license=info["license"], output=output,
            edgeseg=edgeseg_md or {"input": "image", "normalization": {"mean": pre["mean"], "std": pre["std"]}}))
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        types = tensor_types(dst)
        h, w = pre["height"], pre["width"]
        n = len(info["classes"])
        return {
            "input": {"shape": [1, h, w, 3], "layout": "NHWC", "dtype": types["input_dtype"],
                      "values": "RGB pixels 0-255" if pixels else "normalized: (pixel / 255 - mean) / std",
                      "quantization": types.get("input_quantization")},
            "output": {"kind": output, "shape": [1, h, w] if output == "argmax" else [1, h, w, n],
                       "dtype": types["output_dtype"], "quantization": types.get("output_quantization")},
        }

    def ios_io(self, entry: ExportEntry, model: BundleModel) -> dict[str, Any]:
        from exporters.coreml_tools import INPUT_NAME, OUTPUT_NAME

        details = entry.record.get("details", {})
        pre = entry.record["preprocess"]
        h, w = pre["height"], pre["width"]
        image = details.get("input", "image") == "image"
        output = details.get("output", "logits")
        return {
            "input": {"name": INPUT_NAME, "shape": [1, 3, h, w],
                      "type": "image (RGB; normalization in the model)" if image else "MLMultiArray float32, normalized",
                      "dtype": "uint8 pixels" if image else "float32"},
            "output": {"name": OUTPUT_NAME, "kind": output, "shape": [1, h, w] if output == "argmax"
                       else [1, len(model.info["classes"]), h, w], "dtype": "int32" if output == "argmax" else "float32"},
            "deployment_target": details.get("deployment_target"),
        }

    def evidence(self, entry: ExportEntry) -> dict[str, Any]:
        parity = entry.parity
        if parity is None:
            return {"status": "unchecked"}
        keys = ("status", "runtime", "images", "pixel_agreement", "mask_miou", "reference_miou", "exported_miou",
                "miou_drop", "worst_class", "thresholds")
        out = {k: parity.get(k) for k in keys}
        out["reference"] = parity.get("reference", "PyTorch")  # parity.json written before the field: PyTorch
        paths = [{k: p.get(k) for k in ("path", "gated", "status", "pixel_agreement", "mask_miou",
                                        "max_abs_logit_diff", "bit_exact_vs_host_xnnpack", "machine")}
                 for p in parity.get("kernel_paths") or []]
        if paths:  # checked on several kernel paths (check --device arm64 / --kernels): every one
            out["kernel_paths"] = paths
        return out

    def app_readme(self, manifest: dict[str, Any]) -> str:
        from edgeseg.tasks.semantic.app_readme import render_readme

        return render_readme(manifest)

    def report(self, run: Path, threads: int) -> ReportSubject:
        from edgeseg.tasks.semantic.report import SemanticReport

        return SemanticReport(self, run, threads)


def _kernel_paths(folder: Path, record: dict[str, Any], run: Path) -> list[dict[str, Any]]:
    """The paths of the export's kernel-path check (``check --device arm64`` / ``--kernels``), in check order;
    empty when it never ran or ran on a file since replaced (its model digest differs)."""
    from edgeseg.core.digest import file_digest
    from edgeseg.tasks.semantic.run import KERNEL_PATHS

    path = folder / KERNEL_PATHS
    model = run / record.get("path", "")
    if not path.exists() or not model.is_file():
        return []
    found = read_json(path, "kernel-path record", f"check it again: edgeseg check {run} --device arm64")
    if found.get("model_digest") != file_digest(model):
        return []
    return [r for r in (found.get("by_runtime") or {}).values() if "path" in r]
