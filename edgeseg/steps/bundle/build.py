"""``edgeseg bundle``: the folder an Android and an iOS build take as it is.

::

    dist/
      manifest.json        one schema (edgeseg.bundle/1) for both platforms: input/output contract, classes and
                           colours, parity and latency evidence, toolchain versions, sha256 of every other file
      labels.txt           one class name per line (line i = class i)
      README.md            for app developers: Kotlin and Swift snippets filled in for this model
      android/model.tflite TFLite metadata (name, version, normalization, labels.txt packed inside)
      ios/<Name>.mlpackage Core ML package, metadata and class labels filled in

Only exports whose parity check passed go in (``--allow-unchecked`` admits unchecked ones; failed ones never).
The folder is built beside the destination and renamed into place, so a failure leaves nothing behind.
Reproducible: no timestamps or machine paths are written, the TFLite metadata zip has fixed dates, and the Core
ML package's random item identifiers and conversion date are replaced by values derived from its content, so
the same exports give byte-identical bundles.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any, Callable

from edgeseg.core.atomic import atomic_path
from edgeseg.core.digest import file_digest, sha256
from edgeseg.data.transforms import RESIZE_RULES
from edgeseg.core.errors import CheckFailed, UsageError

SCHEMA = "edgeseg.bundle/1"
PLATFORMS = {"android": "tflite", "ios": "coreml"}
# input kinds an app feeds directly (camera pixels) come first when choosing an export automatically
_PREFERRED_INPUT = {"tflite": "pixels", "coreml": "image"}


def _exports(run: Path, target: str) -> list[tuple[Path, dict, dict | None]]:
    out = []
    for rec_path in sorted((run / "export").glob(f"{target}-*/export.json")):
        rec = json.loads(rec_path.read_text())
        parity_path = rec_path.parent / "parity.json"
        parity = json.loads(parity_path.read_text()) if parity_path.exists() else None
        out.append((rec_path.parent, rec, parity))
    return out


def _status(parity: dict | None) -> str:
    return "unchecked" if parity is None else parity.get("status", "unchecked")


def select_export(run: Path, target: str, choice: str, digest: str, allow_unchecked: bool
                  ) -> tuple[Path, dict, dict | None] | None:
    """The export of ``target`` to bundle: ``choice`` names it (``int8-pixels`` or ``tflite-int8-pixels``), or
    ``auto`` picks a checked, passing one of the current checkpoint (camera-pixel input first, then the smallest).
    ``none`` leaves the platform out."""
    if choice == "none":
        return None
    found = _exports(run, target)
    if choice != "auto":
        name = choice if choice.startswith(f"{target}-") else f"{target}-{choice}"
        match = [e for e in found if e[0].name == name]
        if not match:
            have = ", ".join(e[0].name for e in found) or "none"
            raise UsageError(f"no export '{name}' in '{run}/export' (have: {have}); make it with edgeseg export")
        found = match
    current = [e for e in found if e[1].get("checkpoint_digest") == digest]
    if choice != "auto" and not current:
        raise UsageError(f"export '{found[0][0].name}' was made from another checkpoint; export it again")
    usable = [e for e in current if _status(e[2]) == "passed"
              or (allow_unchecked and _status(e[2]) in ("unchecked", "not-verified"))]
    if choice != "auto" and not usable:
        d, _, parity = found[0]
        if _status(parity) == "failed":
            raise CheckFailed(f"export '{d.name}' failed its parity check ({'; '.join(parity.get('failures', []))}); "
                              f"a bundle carries only models that match PyTorch")
        raise UsageError(f"export '{d.name}' has no passing parity check ({_status(parity)}); run edgeseg check "
                         f"first, or pass --allow-unchecked")
    if not usable:
        return None
    pref = _PREFERRED_INPUT[target]
    usable.sort(key=lambda e: (e[1].get("details", {}).get("input", "image") != pref, e[1]["size_bytes"], e[0].name))
    return usable[0]


def swift_name(name: str) -> str:
    """A Swift type name for the .mlpackage (Xcode generates a class named after the file)."""
    words = re.findall(r"[A-Za-z0-9]+", name)
    ident = "".join(w[:1].upper() + w[1:] for w in words) or "SegmentationModel"
    return ident if ident[0].isalpha() else "Model" + ident


def _latency(run: Path, export_name: str, size: int) -> dict[str, Any] | None:
    """Latency from RUN/report.json when it measured this very file (same export name and size)."""
    path = run / "report.json"
    if not path.exists():
        return None
    try:
        rows = json.loads(path.read_text()).get("results", [])
    except ValueError:
        return None
    for row in rows:
        lat = row.get("latency") or {}
        if row.get("name") == export_name and row.get("size_bytes") == size and "median_ms" in lat:
            return {k: lat[k] for k in ("median_ms", "p90_ms", "min_ms", "runs", "threads", "runtime") if k in lat}
    return None


def _parity_evidence(parity: dict | None) -> dict[str, Any]:
    if parity is None:
        return {"status": "unchecked"}
    keys = ("status", "runtime", "images", "pixel_agreement", "mask_miou", "reference_miou", "exported_miou",
            "miou_drop", "thresholds")
    out = {k: parity.get(k) for k in keys}
    out["reference"] = parity.get("reference", "PyTorch")  # parity.json written before the field: PyTorch
    return out


def _write_android(src: Path, dst: Path, rec: dict, info: dict) -> dict[str, Any]:
    from exporters import tflite_metadata
    from exporters.tflite import tensor_types

    edgeseg_md = tflite_metadata.edgeseg_info(src.read_bytes())
    pixels = edgeseg_md.get("input") == "pixels"
    pre = rec["preprocess"]
    mean = (0.0,) if pixels else tuple(m * 255.0 for m in pre["mean"])
    std = (1.0,) if pixels else tuple(s * 255.0 for s in pre["std"])
    output = rec.get("details", {}).get("output", "logits")
    data = tflite_metadata.populate(src.read_bytes(), tflite_metadata.ModelInfo(
        name=info["name"], labels=tuple(c["name"] for c in info["classes"]), mean=mean, std=std,
        description=info["description"], version=info["version"], author=info["author"], license=info["license"],
        output=output, edgeseg=edgeseg_md or {"input": "image", "normalization": {"mean": pre["mean"],
                                                                                    "std": pre["std"]}}))
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


def _normalize_mlpackage(pkg: Path) -> None:
    """Replace the package's random item identifiers with UUIDs derived from each item's path (any UUID is valid;
    these make two bundles of one model identical)."""
    manifest = pkg / "Manifest.json"
    data = json.loads(manifest.read_text())
    ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, "edgeseg:" + item["path"]))
           for old, item in data["itemInfoEntries"].items()}
    data["itemInfoEntries"] = {ids[k]: v for k, v in sorted(data["itemInfoEntries"].items(), key=lambda kv: ids[kv[0]])}
    data["rootModelIdentifier"] = ids[data["rootModelIdentifier"]]
    manifest.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")


def save_mlpackage(src: Path, dst: Path, info: dict) -> None:
    """The Core ML package with the bundle's metadata (author, licence, version, classes and colours), saved
    reproducibly (no conversion date, item identifiers derived from paths)."""
    from exporters.coreml_tools import import_ct
    from exporters.native import quiet_native

    ct = import_ct()
    with quiet_native():
        ml = ct.models.MLModel(str(src), skip_model_load=True)
    ml.author = info["author"] or "edgeseg"
    ml.license = info["license"]
    ml.version = info["version"]
    if info["description"]:
        ml.short_description = info["description"]
    meta = ml.user_defined_metadata
    # the conversion date is the one value that differs between two exports of one checkpoint
    meta.pop("com.github.apple.coremltools.conversion_date", None)
    meta["classes"] = json.dumps([c["name"] for c in info["classes"]])
    meta["colors"] = json.dumps([c["color"] for c in info["classes"]])
    meta["name"] = info["name"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with quiet_native():
        ml.save(str(dst))
    _normalize_mlpackage(dst)


def _write_ios(src: Path, dst: Path, rec: dict, info: dict) -> dict[str, Any]:
    from exporters.coreml import INPUT_NAME, OUTPUT_NAME

    save_mlpackage(src, dst, info)
    details = rec.get("details", {})
    pre = rec["preprocess"]
    h, w = pre["height"], pre["width"]
    image = details.get("input", "image") == "image"
    output = details.get("output", "logits")
    return {
        "input": {"name": INPUT_NAME, "shape": [1, 3, h, w],
                  "type": "image (RGB; normalization in the model)" if image else "MLMultiArray float32, normalized",
                  "dtype": "uint8 pixels" if image else "float32"},
        "output": {"name": OUTPUT_NAME, "kind": output, "shape": [1, h, w] if output == "argmax"
                   else [1, len(info["classes"]), h, w], "dtype": "int32" if output == "argmax" else "float32"},
        "deployment_target": details.get("deployment_target"),
    }


def _files(root: Path) -> list[dict[str, Any]]:
    return [{"path": p.relative_to(root).as_posix(), "sha256": sha256(p), "size_bytes": p.stat().st_size}
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).as_posix() != "manifest.json"]


def validate(manifest: dict[str, Any]) -> list[str]:
    """Schema problems of a manifest (empty when it validates against ``schemas/bundle-1.schema.json``)."""
    from edgeseg.core.schemas import problems

    return problems(manifest, "bundle-1")


def make_bundle(run: Path, output: Path, tflite: str = "auto", coreml: str = "auto", name: str | None = None,
                version: str = "1.0.0", author: str = "", license: str = "", description: str = "",
                allow_unchecked: bool = False, force: bool = False,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the bundle of ``run``'s exports to ``output``; returns the manifest."""
    from edgeseg.tasks.semantic.app_readme import render_readme
    from exporters.base import path_size
    from edgeseg.models import count_params
    from edgeseg.train.checkpoint import load_checkpoint

    from edgeseg.tasks.instance.run import CHECKPOINT as INSTANCE_CHECKPOINT

    if Path(run).is_dir() and (Path(run) / INSTANCE_CHECKPOINT).is_file():
        from edgeseg.steps.bundle.instance import make_instance_bundle

        return make_instance_bundle(Path(run), Path(output), tflite=tflite, coreml=coreml, name=name,
                                    version=version, author=author, license=license, description=description,
                                    allow_unchecked=allow_unchecked, force=force, log=log)
    ckpt = load_checkpoint(run)
    run = Path(ckpt.path).parent
    output = Path(output)
    check_output(run, output, force)
    digest = file_digest(ckpt.path)
    chosen = {plat: select_export(run, PLATFORMS[plat], choice, digest, allow_unchecked)
              for plat, choice in (("android", tflite), ("ios", coreml))}
    if not any(chosen.values()):
        have = ", ".join(f"{d.name} ({_status(p)})" for t in ("tflite", "coreml") for d, _, p in _exports(run, t))
        raise UsageError(f"run '{run}' has no checked, passing TFLite or Core ML export to bundle (exports: "
                         f"{have or 'none'}); run: edgeseg export {run} --target tflite --input pixels, then "
                         f"edgeseg check {run} --target tflite --input pixels")
    classes = [{"index": i, "name": c.name, "color": list(c.color)} for i, c in enumerate(ckpt.classes)]
    model_name = name or f"{run.name} {ckpt.config.model}"
    info = {"name": model_name, "version": version, "author": author, "license": license,
            "description": description or f"Semantic segmentation ({ckpt.config.model}, {len(classes)} classes) "
                                          f"made with edgeseg", "classes": classes}
    pre = ckpt.preprocess
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
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
        "platforms": {},
    }
    versions: dict[str, str] = {}
    with atomic_path(output) as tmp:
        tmp.mkdir()
        for plat, sel in chosen.items():
            if sel is None:
                log(f"{plat}: no {PLATFORMS[plat]} export chosen or none passed parity; left out")
                continue
            d, rec, parity = sel
            src = run / rec["path"]
            if plat == "android":
                rel = "android/model.tflite"
                log(f"android: {d.name} -> {rel} (with TFLite metadata)")
                io = _write_android(src, tmp / rel, rec, info)
            else:
                rel = f"ios/{swift_name(model_name)}.mlpackage"
                log(f"ios: {d.name} -> {rel}")
                io = _write_ios(src, tmp / rel, rec, info)
            versions.update(rec.get("versions", {}))
            manifest["platforms"][plat] = {
                "file": rel, "format": PLATFORMS[plat], "export": d.name, "precision": rec["precision"],
                "size_bytes": path_size(tmp / rel),
                **io, "parity": _parity_evidence(parity), "latency": _latency(run, d.name, rec["size_bytes"]),
            }
        from edgeseg.core.versions import package_versions

        manifest["toolchain"] = {**versions, **package_versions(("edgeseg", "mediapipe"))}
        finish(tmp, manifest, render_readme)
    log(f"wrote {output} ({', '.join(manifest['platforms']) or 'no platform'})")
    return manifest


def check_output(run: Path, output: Path, force: bool) -> None:
    """Refuse an output that is a file, a non-empty folder (without ``force``), the run or inside its exports."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"bundle output '{output}' is a file; pass a folder with -o")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise UsageError(f"bundle output '{output}' already exists and is not empty; pass --force to replace it")
    exports = (run / "export").resolve()
    if output.resolve() in (run.resolve(), exports) or exports in output.resolve().parents:
        raise UsageError(f"bundle output '{output}' would replace the run or sit among its exports; pick another "
                         f"folder (e.g. -o dist)")


def finish(tmp: Path, manifest: dict[str, Any], render_readme: Callable[[dict[str, Any]], str]) -> None:
    """labels.txt, README.md, the file list, schema validation and manifest.json into the bundle being built."""
    (tmp / "labels.txt").write_text("".join(c["name"] + "\n" for c in manifest["classes"]))
    (tmp / "README.md").write_text(render_readme(manifest))
    manifest["files"] = _files(tmp)
    problems = validate(manifest)
    if problems:  # a bug of ours, never the user's: refuse to hand out a manifest apps cannot trust
        raise RuntimeError("bundle manifest does not match its schema: " + "; ".join(problems))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _safe_member(root: Path, rel: str) -> str | None:
    """Why ``rel`` may not be read as a bundle file (None when it is a plain relative path inside ``root``)."""
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        return "is an absolute path"
    if ".." in p.parts:
        return "climbs out of the bundle ('..')"
    full = root / p
    for parent in [full, *full.parents]:
        if parent == root:
            break
        if parent.is_symlink():
            return "goes through a symbolic link"
    return None


def verify_bundle(root: Path) -> list[str]:
    """Everything wrong with a bundle folder: schema, missing/extra/unsafe files, sha256 mismatches."""
    root = Path(root)
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise UsageError(f"'{root}' is not an edgeseg bundle: no manifest.json")
    try:
        manifest = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        return [f"{mpath}: not valid JSON ({e})"]
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        return [f"{mpath}: schema is {found!r}, this edgeseg reads {SCHEMA!r}"]
    problems = [f"manifest.json {p}" for p in validate(manifest)]
    if problems:
        return problems
    listed = set()
    for entry in manifest["files"]:
        rel = entry["path"]
        why = _safe_member(root, rel)
        if why:
            problems.append(f"{rel}: {why}")
            continue
        listed.add(rel)
        f = root / rel
        if not f.is_file():
            problems.append(f"{rel}: listed in manifest.json but missing")
        elif sha256(f) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from manifest.json (file changed after bundling)")
    for plat in manifest["platforms"].values():
        if not any(p == plat["file"] or p.startswith(plat["file"] + "/") for p in listed):
            problems.append(f"{plat['file']}: the platform's model is not among the listed files")
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            problems.append(f"{rel}: symbolic link (bundles hold plain files)")
        elif p.is_file() and rel != "manifest.json" and rel not in listed:
            problems.append(f"{rel}: not listed in manifest.json")
    return problems
