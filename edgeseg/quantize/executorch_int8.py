"""The default ExecuTorch int8 of ``edgeseg export --target executorch --precision int8``: full int8 first, the one
mask-metric search when it fails.

1. XNNPACK's PT2E quantizer on the run's calibration images (:func:`exporters.executorch.quantized_graph`),
   lowered to the ``.pte`` and measured by ExecuTorch's runtime on the validation split with the int8 gate.
2. If that file fails the gate: the one mixed-precision search (:mod:`edgeseg.core.mixed_precision`) over the
   graph's activation quantizers — each candidate mix measured in PyTorch on the converted graph (removing a
   quantize/dequantize pair there is exactly what the lowered file then computes in float), ranked by the mask
   metric, walked within ``--max-float-macs`` — and the chosen mix lowered and measured by the runtime.
3. The file kept: the full int8 if it passes, else the mix if it passes, else the closer of the two to passing
   (``check`` then fails it on the test split and says so). The record (``details.ladder``) lists every file tried
   with its validation figures, latency and seconds. The test split is never used here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.core.atomic import ensure_dir
from edgeseg.core.errors import DataError, ExportError, UsageError
from edgeseg.quantize.ladder import RUNS, WARMUP, Tried, choose
from edgeseg.quantize.options import DEFAULT_MAX_STEPS
from edgeseg.quantize.records import memo, rank_subset
from edgeseg.tasks.semantic.parity import JUDGE, compare, thresholds_for

RANK_IMAGES = 16  # validation images that rank the activation quantizers (each is measured alone)


def export_int8(run: Path, calibration: int = 100, weights: str | None = None, log: Callable[[str], None] = print,
                max_float_macs: float = 10.0, max_steps: int = DEFAULT_MAX_STEPS) -> dict[str, Any]:
    """Write ``run``'s ``executorch-int8`` export as above; returns its record (also export.json)."""
    from exporters import TARGETS, ExporterError
    from exporters import executorch as et

    from edgeseg.core.latency import measure_latency, torch_runner
    from edgeseg.core.mixed_precision import Policy, Space, search
    from edgeseg.core.progress import progress_bar
    from edgeseg.tasks.semantic.run import cache_dir, calibration_images, validation_samples
    from edgeseg.train.checkpoint import load_checkpoint

    if not 0 < max_float_macs <= 100:
        raise UsageError(f"--max-float-macs is a percentage in (0, 100], got {max_float_macs}")
    if calibration < 1:
        raise UsageError(f"--calibration must be at least 1, got {calibration}")
    try:
        TARGETS["executorch"].require()
    except ExporterError as e:
        raise ExportError(str(e)) from None
    t0 = time.time()
    ckpt = load_checkpoint(run)
    run = Path(ckpt.path).parent
    which = ckpt.weights_choice(weights)
    pre = ckpt.preprocess
    example = np.zeros((1, 3, pre.height, pre.width), np.float32)
    scratch = ensure_dir(cache_dir(run, ckpt, which) / "executorch-int8")
    calib = calibration_images(ckpt, calibration)
    if not len(calib):
        raise ExportError(f"int8 needs calibration images; the training split of '{ckpt.config.data}' has none")
    log(f"exporting {ckpt.config.model} to executorch int8 ...")
    try:
        s = time.time()
        graph, used = et.quantized_graph(ckpt.build_model(which).eval(), example, calib)
        quantize_seconds = time.time() - s
        details: dict[str, Any] = {"runtime": f"ExecuTorch {et.version()}", "input_layout": "NCHW",
                                   "output": "logits", "quantizer": et.QUANTIZER, "calibration_images": used,
                                   "quantize_seconds": round(quantize_seconds, 2)}
        try:
            val, labels = validation_samples(ckpt)
        except DataError as e:
            log(f"  executorch int8: {e}; writing the full int8 file unmeasured")
            data, lowered = et.lower(graph, example)
            return _write(run, ckpt, which, example, data, t0, {**details, **lowered, "ladder": {
                "chosen": "full-int8", "rung": None, "why": f"not measured: {e}", "tried": []}})

        ref_model, _ = ckpt.reference_model(which)
        reference = memo(torch_runner(ref_model, 2))
        thresholds = thresholds_for("int8")
        lowered_of: dict[str, dict[str, Any]] = {}

        def measure(name: str, rung: int, what: str, g, seconds: float, **extra: Any) -> Tried:
            data, lowered = et.lower(g, example)
            lowered_of[name] = lowered
            path = scratch / f"{name}.pte"
            path.write_bytes(data)
            runner = et.load(path, threads=2)
            parity = compare(reference, runner, *val, ckpt.class_names, thresholds, "executorch", "int8",
                             runtime=runner.runtime, labels=labels, to_label=pre.to_label, region=pre.region)
            lat = measure_latency(runner, np.asarray(calib[0], np.float32), RUNS, WARMUP)["min_ms"]
            log(f"  {name}: {JUDGE.show(parity)}, {lat:.2f} ms ({seconds + lowered['lower_seconds']:.0f} s)")
            return Tried(name, rung, what, data, parity, lat, seconds + lowered["lower_seconds"], extra)

        log(f"  full int8 on {len(val[0])} validation images (ExecuTorch runtime) ...")
        tried = [measure("full-int8", 1, f"{et.QUANTIZER}, every activation int8", graph, quantize_seconds)]
        mixed: dict[str, Any] | None = None
        if not tried[0].parity.passed:
            images, masks = val
            names = et.activation_quantizers(graph)
            splits = {True: rank_subset(images, masks, labels, RANK_IMAGES), False: (images, masks, labels)}
            ranked = len(splits[True][0])

            def evaluate(keep, quick: bool):
                # the gate as check applies it (class IoU against the labels at their own size included), on the
                # converted graph in PyTorch: a candidate costs no lowering
                imgs, msks, lbls = splits[quick]
                kw = {} if lbls is None else {"labels": lbls, "to_label": pre.to_label, "region": pre.region}
                return compare(reference, torch_runner(et.with_float(graph, keep), 2), imgs, msks, ckpt.class_names,
                               thresholds, "pytorch-int8", "int8", **kw)

            log(f"  full int8 fails on validation; the one search over {len(names)} activation quantizers within "
                f"{max_float_macs:g} % of the multiply-adds in float ...")
            space = Space(candidates=names, evaluate=evaluate, float_macs=lambda keep: et.float_macs(graph, keep),
                          quick_is_full=ranked == len(images))
            with progress_bar(len(names), f"sensitivity (mask mIoU, {ranked} val images)") as bar:
                found = search(space, JUDGE, Policy(max_float_macs, max_steps, ("ranked",)), log,
                               progress=lambda i, n: bar.advance())
            mixed = found.to_json(JUDGE)
            if found.keep:
                tried.append(measure("mixed", 3, f"{et.QUANTIZER}, {len(found.keep)} activation(s) kept float by "
                                     f"the mask-metric search", et.with_float(graph, found.keep), found.seconds,
                                     float_activations=list(found.keep), float_macs_pct=found.float_macs_pct))
    except ExporterError as e:
        raise ExportError(f"executorch int8: {e}") from None
    chosen, why = choose([t for t in tried if t.name == "full-int8"]) if tried[0].parity.passed else choose(tried)
    if chosen is None:
        chosen = max(tried, key=lambda t: (JUDGE.score(t.parity), -t.latency_ms))
        why = ("no file passes on the validation split: the one closest to passing (mask mIoU first) is kept; "
               "edgeseg check measures it on the test split")
    elif chosen.name == "full-int8":
        why = "full int8 passes on the validation split"
    log(f"  kept {chosen.name}: {why}")
    ladder = {"chosen": chosen.name, "rung": chosen.rung, "why": why, "validation_images": len(val[0]),
              "thresholds": thresholds, "tried": [t.to_json() for t in tried], "max_float_macs": max_float_macs,
              **({"mixed_search": mixed} if mixed is not None else {})}
    return _write(run, ckpt, which, example, chosen.data, t0,
                  {**details, **lowered_of[chosen.name], "ladder": ladder})


def _write(run: Path, ckpt, which: str, example: np.ndarray, data: bytes, t0: float,
           details: dict[str, Any]) -> dict[str, Any]:
    """The kept file as ``RUN/export/executorch-int8/model.pte`` and its record."""
    from edgeseg.tasks.semantic.run import write_export

    return write_export(run, ckpt, which, "executorch", "int8", "model.pte", data, example, t0, details)
