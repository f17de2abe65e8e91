"""The steps after training: export a run's model, check its parity, as library calls the CLI wraps.

Layout of a run directory::

    RUN/checkpoint.pt  metrics.json  history.csv
    RUN/export/<target>-<precision>/model.<suffix>  export.json  parity.json
    RUN/export/.cache/<checkpoint digest>/          intermediate artifacts (TF SavedModel)
    RUN/report.json  report.md
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.atomic import ensure_dir, write_json
from edgeseg.data import open_split
from edgeseg.errors import CheckFailed, ExportError, UsageError
from edgeseg.parity import (NOT_VERIFIED, LazySamples, ParityResult, combine_results, compare, not_verified,
                            thresholds_for)
from edgeseg.registry import check_choice
from edgeseg.train.checkpoint import Checkpoint, load_checkpoint
from edgeseg.versions import package_versions

DEFAULT_CALIBRATION = 100


def target_and_precision(target: str, precision: str | None) -> tuple[Any, str]:
    """Validate a target/precision pair against the exporter table (with close-name suggestions)."""
    from exporters import TARGETS

    check_choice(target, list(TARGETS), "target")
    t = TARGETS[target]
    p = precision or t.default_precision
    check_choice(p, list(t.precisions), f"precision for target '{target}'")
    return t, p


def export_dir(run: Path, target: str, precision: str, output: str = "logits", input_kind: str = "image") -> Path:
    """``RUN/export/<target>-<precision>[-argmax][-multiarray|-pixels]``."""
    suffix = ("-argmax" if output == "argmax" else "") + (f"-{input_kind}" if input_kind != "image" else "")
    return Path(run) / "export" / f"{target}-{precision}{suffix}"


def _check_variant(target: str, output: str, input_kind: str) -> None:
    if output not in ("logits", "argmax"):
        raise UsageError(f"--output must be logits or argmax, not '{output}'")
    kinds = {"coreml": ("image", "multiarray"), "tflite": ("image", "pixels")}.get(target, ("image",))
    if input_kind not in kinds:
        raise UsageError(f"--input {input_kind} does not apply to --target {target}; it takes "
                         + " or ".join(kinds))


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def calibration_images(ckpt: Checkpoint, count: int) -> list[np.ndarray]:
    """``count`` preprocessed images from the training split (evenly spaced; all if fewer)."""
    ds = open_split(ckpt.config.data, "train", ckpt.config.image_size)
    n = min(count, len(ds))
    idx = np.linspace(0, len(ds) - 1, n).round().astype(int) if n else []
    return [ckpt.preprocess.image(ds[int(i)][0])[None] for i in idx]


def export_run(run: Path, target: str, precision: str | None = None, calibration: int = DEFAULT_CALIBRATION,
               log: Callable[[str], None] = print, weights: str | None = None, output: str = "logits",
               input_kind: str = "image", deployment_target: str | None = None) -> dict[str, Any]:
    """Export a run's checkpoint; returns the export record (also written as export.json).

    ``weights``: ``ema`` or ``raw`` for a run trained with ``--ema`` (default: the run's export_weights);
    the choice is recorded, and ``check`` compares against the same weights.
    """
    from exporters import ExporterError, ExportOptions, Normalization

    t, precision = target_and_precision(target, precision)
    _check_variant(target, output, input_kind)
    if deployment_target is not None and target != "coreml":
        raise UsageError("--deployment-target applies to --target coreml only")
    if calibration < 1:
        raise UsageError(f"--calibration must be at least 1, got {calibration}")
    ckpt = load_checkpoint(run)
    run = Path(ckpt.path).parent
    try:
        t.require()
    except ExporterError as e:
        raise ExportError(str(e)) from None
    which = ckpt.weights_choice(weights)
    model = ckpt.build_model(which)
    pre = ckpt.preprocess
    example = np.zeros((1, 3, pre.height, pre.width), np.float32)
    needs_calibration = (target, precision) in (("tflite", "int8"), ("coreml", "w8a8"), ("onnx", "int8"),
                                                ("openvino", "int8"))
    # onnx2tf's own check inference wants 20 sample images even for float exports (see exporters/tflite.py)
    count = calibration if needs_calibration else (20 if target == "tflite" else 0)
    calib = calibration_images(ckpt, count)
    digest = _digest(ckpt.path)
    key = digest if which == "raw" or ckpt.ema_weights is None else f"{digest}-{which}"
    cache = Path(run) / "export" / ".cache"
    for stale in cache.glob("*"):  # intermediates of checkpoints that have since been replaced
        if not stale.name.startswith(digest):
            shutil.rmtree(stale, ignore_errors=True)
    work = ensure_dir(cache / key)
    out = export_dir(run, target, precision, output, input_kind)
    fresh = not out.exists()
    ensure_dir(out)
    opts = ExportOptions(precision=precision, calibration=calib,
                         class_names=ckpt.class_names,
                         normalization=Normalization(tuple(pre.mean), tuple(pre.std)),
                         metadata={"author": "edgeseg", "edgeseg_model": ckpt.config.model,
                                   "edgeseg_preprocess": json.dumps(pre.to_json()),
                                   "edgeseg_classes": json.dumps([c.to_json() for c in ckpt.classes])},
                         work_dir=work, output=output, input=input_kind, deployment_target=deployment_target)
    log(f"exporting {ckpt.config.model} to {target} {precision} ...")
    try:
        res = t.export(model, example, opts, out)
    except ExporterError as e:
        if fresh and not any(out.iterdir()):
            out.rmdir()  # a failed first export leaves no empty export directory behind
        raise ExportError(f"export to {target} {precision} failed: {e}") from None
    record = {"schema": "edgeseg.export/1", **res.to_json(),
              "path": str(res.path.relative_to(run)), "checkpoint": ckpt.path.name,
              "checkpoint_digest": digest, "weights": which, "classes": list(ckpt.class_names),
              "preprocess": pre.to_json(), "versions": package_versions(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(out / "export.json", record)
    log(f"  wrote {res.path} ({res.size_bytes / 1e6:.2f} MB) in {res.seconds:.1f} s")
    return record


def _load_export(run: Path, target: str, precision: str, output: str = "logits",
                 input_kind: str = "image") -> tuple[Path, dict]:
    d = export_dir(run, target, precision, output, input_kind)
    rec = d / "export.json"
    if not rec.exists():
        extra = (f" --output {output}" if output != "logits" else "") + \
                (f" --input {input_kind}" if input_kind != "image" else "")
        raise UsageError(f"no {target} {precision}{extra} export in '{run}'; run: edgeseg export {run} "
                         f"--target {target} --precision {precision}{extra}")
    return d, json.loads(rec.read_text())


def check_run(run: Path, target: str, precision: str | None = None, min_agreement: float | None = None,
              min_mask_miou: float | None = None, limit: int | None = None, threads: int = 2,
              log: Callable[[str], None] = print, compute_units: str | None = None, output: str = "logits",
              input_kind: str = "image", data: str | None = None,
              max_miou_drop: float | None = None) -> ParityResult:
    """Run the exported model and the PyTorch reference on the test split (of ``data`` when given, else the
    run's dataset), streamed; write parity.json.

    Raises nothing on a failed threshold: the result's ``status`` says it (the CLI maps it to an
    exit code). A target that cannot run here gives a ``not-verified`` result, never a pass. Core ML runs
    in the Core ML runtime on macOS (``compute_units``) and by reference execution of the saved program
    elsewhere; ``runtime`` in the result says which.
    """
    from exporters import TARGETS, ExporterError

    t, precision = target_and_precision(target, precision)
    thresholds = thresholds_for(precision, min_agreement, min_mask_miou, max_miou_drop)  # bad values: fail first
    ckpt = load_checkpoint(run)
    run = Path(ckpt.path).parent
    _check_variant(target, output, input_kind)
    d, rec = _load_export(run, target, precision, output, input_kind)
    if rec.get("checkpoint_digest") != _digest(ckpt.path):
        raise UsageError(f"the {target} {precision} export in '{d}' was made from another checkpoint; "
                         f"export again: edgeseg export {run} --target {target} --precision {precision}")
    if compute_units is not None and target != "coreml":
        raise UsageError(f"--compute-units applies to --target coreml only, not {target}")
    units: list[str | None] = [None]
    if compute_units is not None:
        units = [u.strip() for u in compute_units.split(",") if u.strip()]
    elif target == "coreml":
        from exporters.coreml import native_runtime

        if native_runtime():  # the Core ML runtime on the CPU alone and with every unit (GPU, neural engine)
            units = ["CPU_ONLY", "ALL"]
    ok, why = t.can_run()
    if not ok:
        res = not_verified(target, precision, why, thresholds)
        write_json(d / "parity.json", {"schema": "edgeseg.parity/1", **res.to_json()})
        return res
    from edgeseg.bench import torch_runner

    test = open_split(data or ckpt.config.data, "test", ckpt.config.image_size)
    if data and getattr(test, "labelled", True) and len(test.classes) != ckpt.num_classes:
        raise UsageError(f"--data '{data}' has {len(test.classes)} classes but the model has {ckpt.num_classes}")
    n = len(test) if limit is None else min(limit, len(test))
    samples = LazySamples(test, n, ckpt.preprocess.image, ckpt.preprocess.mask)  # streamed: bounded memory
    images, masks = samples.images, samples.masks
    ref_model, ref_name = ckpt.reference_model(rec.get("weights", "raw"))
    reference = torch_runner(ref_model, threads)
    results = []
    for unit in units:
        try:
            kw = {"compute_units": unit} if unit is not None else {}
            runner = TARGETS[target].load(run / rec["path"], threads=threads, **kw)
        except ExporterError as e:
            if unit is None:
                raise ExportError(str(e)) from None
            results.append(not_verified(target, precision, str(e), thresholds))
            continue
        log(f"checking {target} {precision} ({runner.runtime}) against {ref_name} on {n} test images ...")
        results.append(compare(reference, runner, images, masks, ckpt.class_names, thresholds, target, precision,
                               runtime=runner.runtime, labels=samples.labels, to_label=ckpt.preprocess.to_label,
                               region=ckpt.preprocess.region, reference_runtime=ref_name))
    res = combine_results(results) if len(results) > 1 else results[0]
    write_json(d / "parity.json", {"schema": "edgeseg.parity/1", **res.to_json()})
    return res


def raise_for_status(res: ParityResult) -> None:
    if res.status == NOT_VERIFIED:
        return
    if not res.passed:
        raise CheckFailed(f"{res.target} {res.precision} parity failed: {'; '.join(res.failures)}")
