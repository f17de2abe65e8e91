"""Export and check of a semantic run (the step :mod:`edgeseg.steps.export` hands it the pairs): every target and
precision in one process, each export checked mask by mask against PyTorch.

Layout of a run directory::

    RUN/checkpoint.pt  metrics.json  history.csv
    RUN/export/<target>-<precision>/model.<suffix>  export.json  parity.json
    RUN/export/.cache/<checkpoint digest>/          intermediate artifacts (TF SavedModel)
    RUN/report.json  report.md
"""

from __future__ import annotations

import collections.abc
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeseg.core.atomic import atomic_path, ensure_dir, write_json
from edgeseg.core.digest import file_digest
from edgeseg.data import open_split
from edgeseg.core.errors import CheckFailed, DataError, ExportError, UsageError
from edgeseg.tasks.semantic.parity import (FAILED, NOT_VERIFIED, LazySamples, ParityResult, combine_results, compare, not_verified,
                            thresholds_for)
from edgeseg.core.registry import check_choice
from edgeseg.train.checkpoint import Checkpoint, load_checkpoint
from edgeseg.core.versions import hardware, package_versions

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


class CalibrationImages(collections.abc.Sequence):
    """Preprocessed calibration images, ``[1, 3, H, W]`` float32 each, kept as the resized uint8 frames they are
    made from (a quarter of the memory: 79 MB instead of 315 MB for 100 images at 512 px) and normalized when
    read; the values are those :meth:`Preprocess.image` gives."""

    def __init__(self, frames: list[np.ndarray], preprocess) -> None:
        self._frames, self._pre = frames, preprocess

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return CalibrationImages(self._frames[i], self._pre)
        return self._pre.normalize(self._frames[i])[None]


def calibration_images(ckpt: Checkpoint, count: int) -> CalibrationImages:
    """``count`` preprocessed images from the training split (evenly spaced; all if fewer)."""
    ds = open_split(ckpt.config.data, "train", ckpt.config.image_size)
    n = min(count, len(ds))
    idx = np.linspace(0, len(ds) - 1, n).round().astype(int) if n else []
    return CalibrationImages([ckpt.preprocess.resize_image(ds[int(i)][0]) for i in idx], ckpt.preprocess)


def has_labels(masks: Sequence[np.ndarray]) -> bool:
    """Whether any of ``masks`` has a labelled pixel (neither the ignore index nor negative)."""
    from edgeseg.core.metrics import IGNORE_INDEX

    return any((m != IGNORE_INDEX).any() and (m >= 0).any() for m in masks)


def keep_if_fits(samples: LazySamples, preprocess) -> LazySamples:
    """``samples`` read once and kept in memory when they fit :data:`KEEP_SAMPLES_BYTES` (image + mask + label per
    sample), for several comparisons in one process; else the same samples, streamed again for each."""
    if samples.count * preprocess.height * preprocess.width * 3 * 4 * 2 <= KEEP_SAMPLES_BYTES:
        return samples.kept()
    return samples


def validation_samples(ckpt) -> tuple[tuple[Sequence[np.ndarray], Sequence[np.ndarray]], Sequence[np.ndarray] | None]:
    """The validation split as an int8 choice compares on it: ``((images, masks), labels)``, kept in memory when
    they fit (every candidate and search step reads them), else streamed as check does. DataError when the split
    is missing or has no labelled images."""
    pre = ckpt.preprocess
    ds = open_split(ckpt.config.data, "val", ckpt.config.image_size)
    samples = keep_if_fits(LazySamples(ds, len(ds), pre.image, pre.mask), pre)
    if not has_labels(samples.masks):
        raise DataError(f"the val split of '{ckpt.config.data}' has no labelled images")
    return (samples.images, samples.masks), samples.labels


def write_export(run: Path, ckpt: Checkpoint, which: str, target: str, precision: str, filename: str, data: bytes,
                 example: np.ndarray, t0: float, details: dict[str, Any], input_kind: str = "image",
                 file_details: Callable[[Path], dict[str, Any]] = lambda path: {}) -> dict[str, Any]:
    """A file an int8 choice kept, as ``RUN/export/<target>-<precision>[-input]/<filename>`` (temp name, then
    renamed), and its record (export.json, returned); ``file_details(path)`` adds what is read from the written
    file. The replaced file's parity is removed: it must not vouch for this one."""
    out = ensure_dir(export_dir(run, target, precision, "logits", input_kind))
    final = out / filename
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    res = {"target": target, "precision": precision, "path": str(final), "size_bytes": final.stat().st_size,
           "seconds": round(time.time() - t0, 1), "input_shape": list(example.shape),
           "details": {**details, **file_details(final)}}
    (out / "parity.json").unlink(missing_ok=True)
    record = export_record(run, ckpt, which, res)
    write_json(out / "export.json", record)
    return record


def labelled_split(ckpt, split: str, limit: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Preprocessed images and masks of ``split``; an error when it has none with labels."""
    ds = open_split(ckpt.config.data, split, ckpt.config.image_size)
    n = len(ds) if limit is None else min(limit, len(ds))
    images, masks = [], []
    for i in range(n):
        img, m = ds[i]
        mask = ckpt.preprocess.mask(m)
        images.append(ckpt.preprocess.image(img))
        masks.append(mask)
    if not has_labels(masks):
        raise DataError(f"the {split} split of '{ckpt.config.data}' has no labelled images; quantization needs "
                        f"labelled {split} images (the {'search and accuracy control' if split == 'val' else 'check'} "
                        f"measure masks against them)")
    return images, masks


def export_options(ckpt: Checkpoint, precision: str, calibration: Sequence[np.ndarray], work: Path | None,
                   output: str = "logits", input_kind: str = "image", deployment_target: str | None = None):
    """The :class:`~exporters.ExportOptions` of one export of ``ckpt``: normalization, classes and the metadata
    every file carries (model, preprocessing, class colours)."""
    from exporters import ExportOptions, Normalization

    pre = ckpt.preprocess
    return ExportOptions(precision=precision, calibration=calibration, class_names=ckpt.class_names,
                         normalization=Normalization(tuple(pre.mean), tuple(pre.std)),
                         metadata={"author": "edgeseg", "edgeseg_model": ckpt.config.model,
                                   "edgeseg_preprocess": json.dumps(pre.to_json()),
                                   "edgeseg_classes": json.dumps([c.to_json() for c in ckpt.classes])},
                         work_dir=work, output=output, input=input_kind, deployment_target=deployment_target)


def cache_dir(run: Path, ckpt: Checkpoint, which: str) -> Path:
    """``RUN/export/.cache/<checkpoint digest>[-<weights>]``, where the intermediates precisions share (ONNX, the TF
    SavedModel) live; the folders of checkpoints that have since been replaced are removed."""
    digest = file_digest(ckpt.path)
    key = digest if which == "raw" or ckpt.ema_weights is None else f"{digest}-{which}"
    cache = Path(run) / "export" / ".cache"
    for stale in cache.glob("*"):  # intermediates of checkpoints that have since been replaced
        if not stale.name.startswith(digest):
            shutil.rmtree(stale, ignore_errors=True)
    return ensure_dir(cache / key)


def export_record(run: Path, ckpt: Checkpoint, which: str, result: dict[str, Any]) -> dict[str, Any]:
    """export.json of one export: the exporter's result (``ExportResult.to_json()``) with the path relative to the
    run and what made it (checkpoint digest, weights, classes, preprocessing, versions, time)."""
    return {"schema": "edgeseg.export/1", **result, "path": str(Path(result["path"]).relative_to(run)),
            "checkpoint": ckpt.path.name, "checkpoint_digest": file_digest(ckpt.path), "weights": which,
            "classes": list(ckpt.class_names), "preprocess": ckpt.preprocess.to_json(),
            "versions": package_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def export_run(run: Path, target: str, precision: str | None = None, calibration: int = DEFAULT_CALIBRATION,
               log: Callable[[str], None] = print, weights: str | None = None, output: str = "logits",
               input_kind: str = "image", deployment_target: str | None = None) -> dict[str, Any]:
    """Export a run's checkpoint to one target and precision; returns the export record (also written as
    export.json). See :func:`export_runs`."""
    _, precision = target_and_precision(target, precision)
    return export_runs(run, [(target, precision)], calibration, log, weights, output, input_kind,
                       deployment_target)[0]


def export_runs(run: Path, pairs: Sequence[tuple[str, str]], calibration: int = DEFAULT_CALIBRATION,
                log: Callable[[str], None] = print, weights: str | None = None, output: str = "logits",
                input_kind: str = "image", deployment_target: str | None = None) -> list[dict[str, Any]]:
    """Export a run's checkpoint to every (target, precision) of ``pairs`` in this one process: the checkpoint
    and the calibration images are read once, each toolchain is imported once, and the intermediates that
    precisions share (ONNX, the TF SavedModel) are made once, in ``RUN/export/.cache``. Returns the export
    records in order; the first failure stops (the exports before it are kept).

    Serial on purpose: exporting Core ML in a worker process while this one made the TFLite files was measured
    no faster on 2 cores (55.7 s vs 55.4 s wall for 3 TFLite + Core ML fp16, LR-ASPP 256 px): TensorFlow's
    converter and calibration already keep both cores busy.

    ``weights``: ``ema`` or ``raw`` for a run trained with ``--ema`` (default: the run's export_weights);
    the choice is recorded, and ``check`` compares against the same weights.
    """
    from exporters import ExporterError

    targets = [target_and_precision(tg, pr)[0] for tg, pr in pairs]  # every pair valid before any work
    for tg, _ in pairs:
        _check_variant(tg, output, input_kind)
    if deployment_target is not None and not any(tg == "coreml" for tg, _ in pairs):
        raise UsageError("--deployment-target applies to --target coreml only")
    if calibration < 1:
        raise UsageError(f"--calibration must be at least 1, got {calibration}")
    ckpt = load_checkpoint(run)
    run = Path(ckpt.path).parent
    for t in targets:
        try:
            t.require()
        except ExporterError as e:
            raise ExportError(str(e)) from None
    which = ckpt.weights_choice(weights)
    pre = ckpt.preprocess
    example = np.zeros((1, 3, pre.height, pre.width), np.float32)
    work = cache_dir(run, ckpt, which)
    images: dict[int, list[np.ndarray]] = {}
    records = []
    for t, (target, precision) in zip(targets, pairs):
        needs_calibration = (target, precision) in (("tflite", "int8"), ("coreml", "w8a8"), ("onnx", "int8"),
                                                    ("openvino", "int8"), ("executorch", "int8"))
        count = calibration if needs_calibration else 0
        if count not in images:
            images[count] = calibration_images(ckpt, count)
        # built for each export: NNCF and the Core ML quantizers hook into the module they are given
        model = ckpt.build_model(which)
        out = export_dir(run, target, precision, output, input_kind)
        fresh = not out.exists()
        ensure_dir(out)
        opts = export_options(ckpt, precision, images[count], work, output, input_kind,
                              deployment_target if target == "coreml" else None)
        log(f"exporting {ckpt.config.model} to {target} {precision} ...")
        try:
            res = t.export(model, example, opts, out)
        except ExporterError as e:
            if fresh and not any(out.iterdir()):
                out.rmdir()  # a failed first export leaves no empty export directory behind
            raise ExportError(f"export to {target} {precision} failed: {e}") from None
        # a new file is unchecked: the parity of the one it replaced must not vouch for it (report, bundle)
        (out / "parity.json").unlink(missing_ok=True)
        record = export_record(run, ckpt, which, res.to_json())
        write_json(out / "export.json", record)
        log(f"  wrote {res.path} ({res.size_bytes / 1e6:.2f} MB) in {res.seconds:.1f} s")
        records.append(record)
    return records


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
              max_miou_drop: float | None = None, max_class_drop: float | None = None) -> ParityResult:
    """Run one exported model and the reference on the test split; see :func:`check_runs`."""
    _, precision = target_and_precision(target, precision)
    return check_runs(run, [(target, precision)], min_agreement, min_mask_miou, limit, threads, log, compute_units,
                      output, input_kind, data, max_miou_drop, max_class_drop)[0]


#: the most memory the test images of a multi-export check may take to be read once and kept (beyond it
#: they are streamed again for each export, as a single check always streams them)
KEEP_SAMPLES_BYTES = 1 << 30


def check_runs(run: Path, pairs: Sequence[tuple[str, str]], min_agreement: float | None = None,
               min_mask_miou: float | None = None, limit: int | None = None, threads: int = 2,
               log: Callable[[str], None] = print, compute_units: str | None = None, output: str = "logits",
               input_kind: str = "image", data: str | None = None,
               max_miou_drop: float | None = None, max_class_drop: float | None = None, device: str = "host",
               arm_cpus: str | None = None, kernels: str | None = None,
               gate_kernels: str | None = None) -> list[ParityResult]:
    """Run each exported model of ``pairs`` and the reference (PyTorch; for an ONNX import the original file
    in onnxruntime) on the test split (of ``data`` when given, else the run's dataset); write each export's
    parity.json (a TFLite check over kernel paths: its :data:`KERNEL_PATHS` record instead). One process: the
    checkpoint, the reference model and the test images (up to :data:`KEEP_SAMPLES_BYTES`) are read once for
    every export.

    TFLite files run on every kernel path asked for (:func:`exporters.arm64.kernel_paths`): ``kernels`` on this
    CPU, or with ``device="arm64"`` the host's XNNPACK and ``kernels`` on each emulated ARM CPU of ``arm_cpus``
    (:data:`ARM64_IMAGES` test images unless ``limit`` says otherwise: emulation is slow); the paths in
    ``gate_kernels`` decide the verdict, every path's figures and its bit-exactness against the host's XNNPACK
    are recorded.

    Raises nothing on a failed threshold: the result's ``status`` says it (the CLI maps it to an
    exit code). A target that cannot run here gives a ``not-verified`` result, never a pass. Core ML runs
    in the Core ML runtime on macOS (``compute_units``) and by reference execution of the saved program
    elsewhere; ``runtime`` in the result says which.
    """
    from exporters import TARGETS, ExporterError

    # bad target, precision or threshold values fail first
    checked = [(target_and_precision(tg, pr)[0], tg, pr, thresholds_for(pr, min_agreement, min_mask_miou,
                                                                        max_miou_drop, max_class_drop))
               for tg, pr in pairs]
    ckpt = load_checkpoint(run)
    run = Path(ckpt.path).parent
    if compute_units is not None and not any(tg == "coreml" for tg, _ in pairs):
        raise UsageError(f"--compute-units applies to --target coreml only, not {','.join(tg for tg, _ in pairs)}")
    paths_asked = device != "host" or kernels is not None or gate_kernels is not None
    if paths_asked and not any(tg == "tflite" for tg, _ in pairs):
        raise UsageError(f"--device, --kernels and --gate-kernels apply to --target tflite, not "
                         f"{','.join(tg for tg, _ in pairs)}")
    if device == "arm64":
        from exporters.arm64 import Arm64Missing, require

        try:
            require()
        except Arm64Missing as e:
            raise UsageError(str(e)) from None
        if limit is None:
            limit = ARM64_IMAGES
            log(f"note: emulated arm64 runs {ARM64_IMAGES} test images (--limit N for more; ~10-100x slower than "
                f"native)")
    digest = file_digest(ckpt.path)
    found = []
    for t, target, precision, thresholds in checked:  # every export present and current before any work
        _check_variant(target, output, input_kind)
        d, rec = _load_export(run, target, precision, output, input_kind)
        if rec.get("checkpoint_digest") != digest:
            raise UsageError(f"the {target} {precision} export in '{d}' was made from another checkpoint; "
                             f"export again: edgeseg export {run} --target {target} --precision {precision}")
        found.append((t, target, precision, thresholds, d, rec))
    samples = None
    references: dict[str, tuple[Any, str]] = {}
    out = []
    for t, target, precision, thresholds, d, rec in found:
        units: list[str | None] = [None]
        if compute_units is not None and target == "coreml":
            units = list(_names(compute_units))
        elif target == "coreml":
            from exporters.coreml import native_runtime

            if native_runtime():  # the Core ML runtime on the CPU alone and with every unit (GPU, neural engine)
                units = ["CPU_ONLY", "ALL"]
        ok, why = t.can_run()
        if not ok:
            res = not_verified(target, precision, why, thresholds)
            write_json(d / "parity.json", {"schema": "edgeseg.parity/1", **res.to_json()})
            out.append(res)
            continue
        from edgeseg.core.latency import torch_runner

        if samples is None:
            test = open_split(data or ckpt.config.data, "test", ckpt.config.image_size)
            if data and getattr(test, "labelled", True) and len(test.classes) != ckpt.num_classes:
                raise UsageError(f"--data '{data}' has {len(test.classes)} classes but the model has "
                                 f"{ckpt.num_classes}")
            n = len(test) if limit is None else min(limit, len(test))
            samples = LazySamples(test, n, ckpt.preprocess.image, ckpt.preprocess.mask)  # streamed: bounded memory
            if len(found) > 1:  # several exports: read once and keep, when it fits
                samples = keep_if_fits(samples, ckpt.preprocess)
        which = rec.get("weights", "raw")
        if which not in references:
            ref_model, ref_name = ckpt.reference_model(which)
            references[which] = (torch_runner(ref_model, threads), ref_name)
        reference, ref_name = references[which]
        if target == "tflite" and paths_asked:
            res = _check_paths(run / rec["path"], reference, samples, ckpt, thresholds, precision, threads, device,
                               arm_cpus, kernels, gate_kernels, ref_name, log)
            # beside parity.json, not over it: the kernel-path check (8 images on ARM) is more evidence, not a
            # replacement of the test split's; the model file's digest ties it to the file it ran
            write_json(d / KERNEL_PATHS, {"schema": "edgeseg.kernel-paths/1",
                                          "model_digest": file_digest(run / rec["path"]), **res.to_json()})
            out.append(res)
            continue
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
            log(f"checking {target} {precision} ({runner.runtime}) against {ref_name} on {samples.count} test "
                f"images ...")
            results.append(compare(reference, runner, samples.images, samples.masks, ckpt.class_names, thresholds,
                                   target, precision, runtime=runner.runtime, labels=samples.labels,
                                   to_label=ckpt.preprocess.to_label, region=ckpt.preprocess.region,
                                   reference_runtime=ref_name))
        res = combine_results(results) if len(results) > 1 else results[0]
        write_json(d / "parity.json", {"schema": "edgeseg.parity/1", **res.to_json()})
        out.append(res)
    return out


#: where a check over several kernel paths (``--device arm64`` / ``--kernels`` / ``--gate-kernels``) writes its
#: record, in the export's folder beside parity.json
KERNEL_PATHS = "kernel-paths.json"

#: test images an emulated arm64 check runs unless --limit says otherwise (an int8 LR-ASPP at 256 px: ~1 s
#: per image and path emulated)
ARM64_IMAGES = 8


def _names(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _check_paths(model: Path, reference, samples, ckpt, thresholds: dict, precision: str, threads: int,
                 device: str, arm_cpus: str | None, kernels: str | None, gate_kernels: str | None, ref_name: str,
                 log: Callable[[str], None]) -> ParityResult:
    """One TFLite file on every kernel path: each path compared with the reference, the gated ones combined
    into the verdict, every path (with its bit-exactness against the host's XNNPACK) in ``by_runtime``."""
    from exporters import ExporterError
    from exporters.arm64 import APP_KERNELS, CPUS, kernel_paths

    try:
        paths = kernel_paths(model, threads, device, _names(arm_cpus) or tuple(CPUS), _names(kernels),
                             _names(gate_kernels) or APP_KERNELS, host_cpu=str(hardware()["cpu"]))
    except ExporterError as e:
        raise UsageError(str(e)) from None
    results, gated = [], []
    for path in paths:
        log(f"checking tflite {precision} on {path.name} ({path.runner.runtime}) against {ref_name} on "
            f"{samples.count} test images ...")
        try:
            r = compare(reference, path.runner, samples.images, samples.masks, ckpt.class_names, thresholds,
                        "tflite", precision, runtime=path.runner.runtime, labels=samples.labels,
                        to_label=ckpt.preprocess.to_label, region=ckpt.preprocess.region, reference_runtime=ref_name)
        except ExporterError as e:  # a path that cannot run the file (an op its kernels lack): it fails
            r = ParityResult(target="tflite", precision=precision, status=FAILED, runtime=path.runner.runtime,
                             thresholds=dict(thresholds), failures=[f"does not run: {str(e)[:300]}"],
                             reason=str(e)[:300])
        results.append(r)
        gated.append(path.gated)
    res = combine_results([r for r, g in zip(results, gated) if g])
    base = paths[0].digests
    res.by_runtime = {}
    for path, r in zip(paths, results):
        same = [p.name for p in paths if p is not path and p.digests and p.digests == path.digests]
        res.by_runtime[r.runtime] = {
            **path.info(), "path": path.name, "status": r.status, "pixel_agreement": r.pixel_agreement,
            "mask_miou": r.mask_miou, "miou_drop": r.miou_drop, "worst_class": r.worst_class,
            "max_abs_logit_diff": r.max_abs_logit_diff, "reason": r.reason,
            "bit_exact_vs_host_xnnpack": bool(path.digests) and path.digests == base, "bit_exact_with": same,
            "failures": list(r.failures)}
    return res


def raise_for_status(res: ParityResult) -> None:
    if res.status == NOT_VERIFIED:
        return
    if not res.passed:
        raise CheckFailed(f"{res.target} {res.precision} parity failed: {'; '.join(res.failures)}")
