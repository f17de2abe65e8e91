"""``edgeseg bundle`` on a Mask R-CNN run: the same folder and manifest schema as a semantic bundle.

::

    dist/
      manifest.json          edgeseg.bundle/1 with "task": "instance": the input contract (letterbox to the top-left),
                             each platform's output tensors (name, signature key, shape, dtype, meaning), the
                             post-processing the check used (score threshold, mask paste rule, mask threshold),
                             instance-parity and latency evidence, sha256 of every file
      labels.txt             one class name per line (line 0 is the background, never detected)
      README.md              Kotlin and Swift that decode boxes, scores and classes and paste the 28x28 masks into
                             the frame exactly as ``edgeseg check`` does
      android/model.tflite   the export graph as exported (NCHW float32 input in [0, 1], five outputs)
      ios/<Name>.mlpackage   the export graph, image input, metadata and class labels filled in

What is shared with the semantic bundle (:mod:`edgeseg.steps.bundle.build`): output checks, atomic folder, Core ML metadata and
reproducible saving, latency lookup in ``report.json``, file list, schema validation, ``--verify``. What differs:
which exports exist (``export/maskrcnn-<target>-<precision>/``, read by :func:`edgeseg.tasks.instance.run.read_record`),
the output description and the app code.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from edgeseg.core.errors import CheckFailed, UsageError

PLATFORMS = {"android": "tflite", "ios": "coreml"}
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


def _exports(run: Path, target: str) -> list[tuple[Path, dict]]:
    from edgeseg.tasks.instance.run import instance_exports

    return instance_exports(run, target)


def _status(rec: dict) -> str:
    return (rec.get("parity") or {}).get("status", "unchecked")


def select_export(run: Path, target: str, choice: str, digest: str, allow_unchecked: bool
                  ) -> tuple[Path, dict] | None:
    """The export of ``target`` to bundle: ``choice`` names it (``fp16`` or ``maskrcnn-tflite-fp16``), ``auto``
    takes the smallest passing one of the current checkpoint, ``none`` leaves the platform out."""
    if choice == "none":
        return None
    found = _exports(run, target)
    if choice != "auto":
        name = choice if choice.startswith("maskrcnn-") else f"maskrcnn-{target}-{choice.removeprefix(target + '-')}"
        found = [e for e in found if e[0].name == name]
        if not found:
            have = ", ".join(d.name for d, _ in _exports(run, target)) or "none"
            raise UsageError(f"no export '{name}' in '{run}/export' (have: {have}); make it with edgeseg export "
                             f"{run} --target {target}")
    current = [e for e in found if e[1].get("checkpoint_digest") == digest]
    if choice != "auto" and not current:
        raise UsageError(f"export '{found[0][0].name}' was made from another checkpoint (or before exports "
                         f"recorded theirs); export it again")
    usable = [e for e in current if _status(e[1]) == "passed"
              or (allow_unchecked and _status(e[1]) in ("unchecked", "not-verified"))]
    if choice != "auto" and not usable:
        d, rec = found[0]
        if _status(rec) == "failed":
            raise CheckFailed(f"export '{d.name}' failed its instance-parity check "
                              f"({'; '.join(rec['parity'].get('failures', []))}); a bundle carries only models "
                              f"that match PyTorch")
        raise UsageError(f"export '{d.name}' has no passing instance-parity check ({_status(rec)}); check it "
                         f"again, or pass --allow-unchecked")
    if not usable:
        return None
    usable.sort(key=lambda e: (e[1]["size_bytes"], e[0].name))
    return usable[0]


def _evidence(rec: dict) -> dict[str, Any]:
    p = rec.get("parity") or {}
    keys = ("status", "runtime", "images", "reference_detections", "matched", "missed", "extra", "mask_iou_mean",
            "mask_iou_min", "box_iou_mean", "box_iou_min", "max_score_diff", "reference_ap", "exported_ap",
            "thresholds")
    out = {k: p.get(k) for k in keys}
    out["status"] = out["status"] or "unchecked"
    out["reference"] = "torchvision eager Mask R-CNN (PyTorch), the export graph's counts"
    out["score_threshold"] = rec.get("score_threshold")
    return out


def _android(src: Path, dst: Path) -> dict[str, Any]:
    from edgeseg.tasks.instance.static_graph import OUTPUTS
    from exporters.tflite_litert import GraphRunner

    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    sig = GraphRunner(dst, OUTPUTS, threads=1).tensors()
    return {"input": {**sig["input"], "layout": "NCHW", "values": "RGB / 255 (0 to 1); normalization is in the model"},
            "output": {"kind": "detections", "tensors": [{"name": n, **sig["outputs"][n], "meaning": MEANING[n]}
                                                         for n in OUTPUTS]}}


def _ios(src: Path, dst: Path, info: dict, size: int, d: int, m: int) -> dict[str, Any]:
    from edgeseg.steps.bundle.build import save_mlpackage
    from edgeseg.tasks.instance.static_graph import OUTPUTS
    from exporters.coreml import INPUT_NAME

    save_mlpackage(src, dst, info)
    shapes = {"boxes": [1, d, 4], "scores": [1, d], "classes": [1, d], "num_detections": [1], "masks": [1, d, m, m]}
    return {"input": {"name": INPUT_NAME, "shape": [1, 3, size, size], "dtype": "uint8 pixels",
                      "type": "image (RGB; scaling and normalization in the model)"},
            "output": {"kind": "detections", "tensors": [{"name": n, "key": n, "shape": shapes[n], "dtype": "float32",
                                                          "meaning": MEANING[n]} for n in OUTPUTS]}}


def make_instance_bundle(run: Path, output: Path, tflite: str = "auto", coreml: str = "auto",
                         name: str | None = None, version: str = "1.0.0", author: str = "", license: str = "",
                         description: str = "", allow_unchecked: bool = False, force: bool = False,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the bundle of a Mask R-CNN run's checked TFLite/Core ML exports to ``output``; returns the manifest."""
    from edgeseg.core.atomic import atomic_path
    from edgeseg.steps.bundle.build import _latency, check_output, finish, sha256, swift_name
    from edgeseg.data.base import default_colors
    from edgeseg.tasks.instance.app_readme import render_instance_readme
    from edgeseg.tasks.instance.run import CHECKPOINT, load_run
    from edgeseg.models import count_params
    from edgeseg.core.digest import file_digest
    from edgeseg.core.versions import package_versions
    from exporters.base import path_size

    model, cfg = load_run(run)
    check_output(run, output, force)
    digest = file_digest(run / CHECKPOINT)
    chosen = {plat: select_export(run, PLATFORMS[plat], choice, digest, allow_unchecked)
              for plat, choice in (("android", tflite), ("ios", coreml))}
    if not any(chosen.values()):
        have = ", ".join(f"{d.name} ({_status(r)})" for t in PLATFORMS.values() for d, r in _exports(run, t))
        raise UsageError(f"run '{run}' has no TFLite or Core ML export of its current checkpoint with passing "
                         f"instance parity (exports: {have or 'none'}); run: edgeseg export {run} --target "
                         f"tflite,coreml")
    names = list(cfg.get("classes") or ["background", "object"])
    classes = [{"index": i, "name": c, "color": list(col)} for i, (c, col) in enumerate(zip(names,
                                                                                             default_colors(len(names))))]
    size = int(cfg["size"])
    graph = next(r for r in chosen.values() if r)[1]["details"]["graph"]
    # the mask head upsamples its RoIAlign grid twice (torchvision: 14 -> 28)
    d, m = int(graph["detections"]), 2 * int(model.roi_heads.mask_roi_pool.output_size[0])
    model_name = name or f"{run.name} maskrcnn"
    info = {"name": model_name, "version": version, "author": author, "license": license,
            "description": description or f"Instance segmentation (Mask R-CNN, {cfg['backbone']}, "
                                          f"{len(names) - 1} classes and background)", "classes": classes}
    # the score threshold the parity checks used (each record's; the app applies the same)
    score_thresholds = {float(c[1].get("score_threshold", 0.3)) for c in chosen.values() if c}
    manifest: dict[str, Any] = {
        "schema": "edgeseg.bundle/1", "task": "instance",
        "model": {"name": model_name, "version": version, "description": info["description"], "author": author,
                  "license": license, "architecture": "maskrcnn", "architecture_options": {"backbone": cfg["backbone"]},
                  "params": count_params(model), "checkpoint_sha256": sha256(run / CHECKPOINT)},
        "input": {"height": size, "width": size, "channels": 3, "color": "RGB", "resize": "letterbox-top-left",
                  "resize_rule": INPUT_RULE.format(S=size),
                  "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                                    "formula": "pixel / 255 (the model normalizes inside)"}},
        "classes": classes,
        "postprocess": {"detections": d, "mask_size": m, "score_threshold": max(score_thresholds),
                        "mask_threshold": 0.5, "paste": PASTE_RULE},
        "platforms": {},
    }
    versions: dict[str, str] = {}
    with atomic_path(output) as tmp:
        tmp.mkdir()
        for plat, sel in chosen.items():
            if sel is None:
                log(f"{plat}: no {PLATFORMS[plat]} export chosen or none passed instance parity; left out")
                continue
            exp_dir, rec = sel
            src = exp_dir / Path(rec["path"]).name
            if plat == "android":
                rel = "android/model.tflite"
                io = _android(src, tmp / rel)
                if io["output"]["tensors"][-1]["shape"] != [1, d, m, m]:  # the file is the contract
                    raise CheckFailed(f"'{src}' has masks {io['output']['tensors'][-1]['shape']}, not "
                                      f"[1, {d}, {m}, {m}] as its record and the model say; export it again")
            else:
                rel = f"ios/{swift_name(model_name)}.mlpackage"
                io = _ios(src, tmp / rel, info, size, d, m)
            log(f"{plat}: {exp_dir.name} -> {rel}")
            versions.update({k: str(v) for k, v in (rec.get("details", {}).get("versions") or {}).items()})
            manifest["platforms"][plat] = {
                "file": rel, "format": PLATFORMS[plat], "export": exp_dir.name, "precision": rec["precision"],
                "size_bytes": path_size(tmp / rel), **io, "parity": _evidence(rec),
                "latency": _latency(run, exp_dir.name, int(rec["size_bytes"])),
                **({"deployment_target": rec.get("details", {}).get("deployment_target")} if plat == "ios" else {}),
            }
        manifest["toolchain"] = {**versions, **package_versions(("edgeseg",))}
        finish(tmp, manifest, render_instance_readme)
    log(f"wrote {output} ({', '.join(manifest['platforms'])})")
    return manifest
