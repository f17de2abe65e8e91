"""``edgeseg bundle``: the folder an Android and an iOS build take as it is.

::

    dist/
      manifest.json        one schema (edgeseg.bundle/1) for both platforms: input/output contract, classes and
                           colours, parity and latency evidence, toolchain versions, sha256 of every other file
      labels.txt           one class name per line (line i = class i)
      README.md            for app developers: Kotlin and Swift snippets filled in for this model
      android/model.tflite TFLite metadata (name, version, normalization, labels.txt packed inside)
      ios/<Name>.mlpackage Core ML package, metadata and class labels filled in
      executorch/model.pte with --executorch: the ExecuTorch file (XNNPACK delegate, CPU: one file for Android
                           and iOS), its tensors, parity, latency and delegation in the manifest's "executorch"

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
from edgeseg.core.errors import CheckFailed, UsageError
from edgeseg.steps.bundle.verify import SCHEMA, validate
from edgeseg.tasks import ExportEntry, Task, run_dir, task_of

PLATFORMS = {"android": "tflite", "ios": "coreml"}


def select_export(task: Task, run: Path, target: str, choice: str, digest: str, allow_unchecked: bool
                  ) -> ExportEntry | None:
    """The export of ``target`` to bundle: ``choice`` names it (``int8-pixels`` or ``tflite-int8-pixels``; for an
    instance run ``fp16`` or ``maskrcnn-tflite-fp16``), or ``auto`` picks a checked, passing one of the current
    checkpoint (the task's preference first: camera-pixel input, then the smallest). ``none`` leaves the platform
    out."""
    if choice == "none":
        return None
    found = task.exports(run, target)
    if choice != "auto":
        name = task.export_name(target, choice)
        match = [e for e in found if e.name == name]
        if not match:
            have = ", ".join(e.name for e in found) or "none"
            raise UsageError(f"no export '{name}' in '{run}/export' (have: {have}); make it with edgeseg export "
                             f"{run} --target {target}")
        found = match
    current = [e for e in found if e.record.get("checkpoint_digest") == digest]
    if choice != "auto" and not current:
        raise UsageError(f"export '{found[0].name}' was made from another checkpoint (or before exports recorded "
                         f"theirs); export it again")
    usable = [e for e in current if e.status == "passed"
              or (allow_unchecked and e.status in ("unchecked", "not-verified"))]
    if choice != "auto" and not usable:
        e = found[0]
        if e.status == "failed":
            raise CheckFailed(f"export '{e.name}' failed its {task.parity_kind} check "
                              f"({'; '.join((e.parity or {}).get('failures', []))}); a bundle carries only models "
                              f"that match PyTorch")
        raise UsageError(f"export '{e.name}' has no passing {task.parity_kind} check ({e.status}); run edgeseg "
                         f"check first, or pass --allow-unchecked")
    if not usable:
        return None
    return sorted(usable, key=task.preference(target))[0]


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


def _files(root: Path) -> list[dict[str, Any]]:
    return [{"path": p.relative_to(root).as_posix(), "sha256": sha256(p), "size_bytes": p.stat().st_size}
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).as_posix() != "manifest.json"]


def make_bundle(run: Path, output: Path, tflite: str = "auto", coreml: str = "auto", name: str | None = None,
                version: str = "1.0.0", author: str = "", license: str = "", description: str = "",
                allow_unchecked: bool = False, force: bool = False,
                log: Callable[[str], None] = print, executorch: str = "none") -> dict[str, Any]:
    """Write the bundle of ``run``'s exports (any task) to ``output``; returns the manifest."""
    from edgeseg.core.versions import package_versions
    from exporters.base import path_size

    task = task_of(run)
    given, run, output = run, run_dir(run), Path(output)
    checkpoint = task.checkpoint(given)  # a run directory or its checkpoint file; refuses a folder that is no run
    digest = file_digest(checkpoint)
    check_output(run, output, force)
    chosen = {plat: select_export(task, run, PLATFORMS[plat], choice, digest, allow_unchecked)
              for plat, choice in (("android", tflite), ("ios", coreml))}
    pte = select_export(task, run, "executorch", executorch, digest, allow_unchecked)
    if executorch != "none" and pte is None:
        have = ", ".join(f"{e.name} ({e.status})" for e in task.exports(run, "executorch")) or "none"
        raise UsageError(f"--executorch: run '{run}' has no ExecuTorch export of its current checkpoint with a passing "
                         f"{task.parity_kind} check (exports: {have}); run: edgeseg export {run} --target executorch "
                         f"--precision fp32,int8, then edgeseg check {run} --target executorch")
    if not any(chosen.values()) and pte is None:
        have = ", ".join(f"{e.name} ({e.status})" for t in PLATFORMS.values() for e in task.exports(run, t))
        raise UsageError(f"run '{run}' has no TFLite or Core ML export of its current checkpoint with a passing "
                         f"{task.parity_kind} check (exports: {have or 'none'}); run: edgeseg export {run} --target "
                         f"tflite,coreml, then edgeseg check {run} --target tflite,coreml")
    model = task.bundle_model(checkpoint, name, version, author, license, description, chosen)
    manifest: dict[str, Any] = {"schema": SCHEMA, **model.manifest, "platforms": {}}
    versions: dict[str, str] = {}
    with atomic_path(output) as tmp:
        tmp.mkdir()
        for plat, entry in chosen.items():
            if entry is None:
                log(f"{plat}: no {PLATFORMS[plat]} export chosen or none passed its {task.parity_kind} check; "
                    f"left out")
                continue
            if plat == "android":
                rel = "android/model.tflite"
                io = task.write_android(entry, tmp / rel, model)
            else:
                rel = f"ios/{swift_name(model.info['name'])}.mlpackage"
                save_mlpackage(entry.dir / Path(entry.record["path"]).name, tmp / rel, model.info)
                io = task.ios_io(entry, model)
            log(f"{plat}: {entry.name} -> {rel}")
            rec = entry.record
            versions.update({k: str(v) for k, v in {**(rec.get("versions") or {}),
                                                    **(rec.get("details", {}).get("versions") or {})}.items()})
            manifest["platforms"][plat] = {
                "file": rel, "format": PLATFORMS[plat], "export": entry.name, "precision": rec["precision"],
                "size_bytes": path_size(tmp / rel), **io, "parity": task.evidence(entry),
                "latency": _latency(run, entry.name, int(rec["size_bytes"])),
            }
        if pte is not None:
            manifest["executorch"] = _executorch(task, run, pte, tmp)
            log(f"executorch: {pte.name} -> {manifest['executorch']['file']}")
            versions.update({k: str(v) for k, v in (pte.record.get("versions") or {}).items()})
        manifest["toolchain"] = {**versions, **package_versions(("edgeseg", "mediapipe"))}
        finish(tmp, manifest, task.app_readme)
    log(f"wrote {output} ({', '.join(manifest['platforms'])})")
    return manifest


def _executorch(task: Task, run: Path, entry: ExportEntry, tmp: Path) -> dict[str, Any]:
    """``executorch/model.pte`` copied byte for byte (the checked file) and its manifest entry: the tensors the file
    declares, parity, latency and the XNNPACK delegation coverage."""
    import shutil

    from exporters.executorch import delegation_summary, tensor_meta

    rel = "executorch/model.pte"
    src = run / entry.record["path"]
    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, tmp / rel)
    meta = tensor_meta(tmp / rel)
    details = entry.record.get("details", {})
    kind = details.get("output", "logits")
    (inp,), (out,) = meta["inputs"], meta["outputs"]
    return {"file": rel, "format": "executorch", "export": entry.name, "precision": entry.record["precision"],
            "size_bytes": (tmp / rel).stat().st_size, "runs_on": ["android", "ios"], "backend": "XNNPACK (CPU)",
            "input": {**inp, "layout": "NCHW", "values": "normalized: (pixel / 255 - mean) / std"},
            "output": {"kind": kind, **out, "layout": "NHW" if kind == "argmax" else "NCHW"},
            "parity": task.evidence(entry), "latency": _latency(run, entry.name, int(entry.record["size_bytes"])),
            "delegation": delegation_summary(details)}


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
