"""``edgeseg quantize --method aeq``: int8 TFLite by ai-edge-quantizer, mixed precision found by the mask metric.

The float32 TFLite file (the run's own ``export --target tflite`` route, onnx2tf 2.x) is calibrated once and quantized
to full int8 (:mod:`exporters.tflite_aeq`). With ``--mixed-precision``, when that file misses the gate on the
**validation** split:

1. *Sensitivity by the mask metric*: every op is kept in float alone (the rest int8) and ``RANK_IMAGES`` evenly
   spaced validation images are checked; the gain in mask mIoU over full int8 on them ranks the ops. (Not the
   TF Lite converter debugger's RMSE, which ranked the ptq/qat search until TFLite left TensorFlow: on CamVid its
   ranking found no mix that helped masks; measured here, one op alone in float moves mask mIoU by at most 0.01 on
   one CamVid LR-ASPP, 0.06 on another.)
2. *Search*: two orders are walked cumulatively, one op more per step — the ranking, and the graph order from the
   input (measured on CamVid: the error enters in the first layers — the stem convolution's int8 weights alone cost
   0.03 mask mIoU — and every later layer carries it). Each step is one quantization (~0.1 s) and one check.
   Every step is checked on the whole validation split. An op that would put more than ``--max-float-macs`` % of
   the multiply-adds in float is skipped.
3. The cheapest mix (fewest float multiply-adds) that passes is kept; if none does, the best one (highest mask
   mIoU) is written and checked anyway so that its figures are on record, and the command exits 1.

Steps 1-3 are the one search of every int8 route (:mod:`edgeseg.core.mixed_precision`), judged by mask parity.

The search never looks at the test split, which then measures the result (``parity.json``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeseg.core.atomic import ensure_dir
from edgeseg.core.errors import ExportError
from edgeseg.quantize.job import Job
from edgeseg.core.mixed_precision import Found, Policy, Space, search
from edgeseg.quantize.records import memo, rank_subset
from edgeseg.tasks.semantic.parity import JUDGE, ParityResult, compare

# Validation images the per-op ranking checks (all of them when fewer). The ranking is most of the search's time
# (one check per op: 110 on LR-ASPP, 150+ on DeepLabV3+); measured on CamVid val (LR-ASPP, 110 ops, no
# equalization) against the ranking on all 101 images: the same five top ops (mask-mIoU gains
# 0.064/0.021/0.033/0.009/0.003 vs 0.060/0.030/0.021/0.009/0.003), 5 of the top 10, Spearman 0.50 over all ops (the
# tail is gains of < 0.002, noise); with --equalize weights the whole search took 146 s instead of 352 s and chose
# the same mix (98.144 % / 0.8994 on val).
RANK_IMAGES = 24


def search_ops(q, reference, val, class_names, thresholds, scratch: Path, max_float_macs: float, max_steps: int,
               log, labels=None, preprocess=None) -> tuple[Found, dict]:
    """The one search over ``q``'s ops (an :class:`~exporters.tflite_aeq.Int8Quantizer`): ops ranked by the mask
    mIoU they gain alone on :data:`RANK_IMAGES` validation images, then the ranking and the graph order walked on
    the whole ``val`` split; returns what it found and its record. With ``labels`` (the label maps at their own
    size) and ``preprocess``, every check measures as ``edgeseg check`` does (the frame's pixels only, dataset
    figures at the labels' size); else at the model's size over the whole input."""
    from exporters.tflite import load

    images, masks = val
    ref_val = memo(reference)
    rank_split = rank_subset(images, masks, labels, RANK_IMAGES)
    ranked = len(rank_split[0])
    whole = (images, masks, labels)

    def evaluate(float_ops, split=whole) -> ParityResult:
        scratch.write_bytes(q.quantize(float_ops))
        kw = {} if split[2] is None else {"labels": split[2], "to_label": preprocess.to_label,
                                          "region": preprocess.region}
        return compare(ref_val, load(scratch), split[0], split[1], class_names, thresholds, "tflite", "int8", **kw)

    by_index = {o.index: o for o in q.candidates()}
    space = Space(candidates=list(by_index), float_macs=q.float_macs, quick_is_full=ranked == len(images),
                  evaluate=lambda keep, quick: evaluate(keep, rank_split if quick else whole),
                  describe=lambda i: {"op": i, "type": by_index[i].type, "macs": by_index[i].macs})
    log(f"  mixed precision: measuring each of {len(by_index)} ops kept in float alone on {ranked} validation "
        f"images, then walking the ranking and the graph order ...")
    from edgeseg.core.progress import progress_bar

    with progress_bar(len(by_index), "sensitivity (mask mIoU)") as bar:
        found = search(space, JUDGE, Policy(max_float_macs, max_steps, ("ranked", "from-input")), log,
                       progress=lambda i, n: bar.advance())
    return found, {**found.to_json(JUDGE), "ranking_images": ranked}


def quantize_aeq(job: Job) -> list[str]:
    """Write ``tflite-int8-aeq`` (and ``tflite-int8-aeq-mixed`` when searched); returns the failures."""
    run, ckpt, model, example, calib = job.run, job.ckpt, job.model, job.example, job.calib
    val, test = job.val, job.test
    reference, thresholds, opts, base_opts, log, summary = (job.reference, job.thresholds, job.opts, job.base_opts,
                                                           job.log, job.summary)
    extra = job.extra
    from exporters import TARGETS as EXPORTERS
    from exporters import ExporterError, tflite_metadata
    from exporters.tflite import load, model_info, tensor_types
    from exporters.tflite_aeq import DEFAULT_FLOAT_TYPES, Int8Quantizer

    from edgeseg.core.atomic import atomic_path
    from edgeseg.quantize.records import summary_row, write_record

    work = base_opts.work_dir
    t0 = time.time()
    try:
        fp32 = EXPORTERS["tflite"].export(model, example, base_opts.replace(precision="fp32"),
                                          ensure_dir(work / "fp32"))
        log(f"ai-edge-quantizer: calibrating ({opts.ranges} ranges, {sum(len(c) for c in calib)} images) ...")
        types = DEFAULT_FLOAT_TYPES if opts.float_types is None else opts.float_types
        q = Int8Quantizer(fp32.path.read_bytes(), calib, opts.ranges, types)
    except ExporterError as e:
        raise ExportError(f"tflite-int8-aeq: {e}") from None
    info = model_info(base_opts)

    def write(name: str, data: bytes, details: dict) -> tuple[Path, dict, ParityResult]:
        out = ensure_dir(run / "export" / name)
        final = out / "model.tflite"
        with atomic_path(final) as tmp:
            tmp.write_bytes(tflite_metadata.populate(data, info))
        runner = load(final)
        parity = compare(reference, runner, *test, ckpt.class_names, thresholds, "tflite", "int8",
                         runtime=runner.runtime)
        res_json = {"target": "tflite", "precision": "int8", "path": str(final), "size_bytes": final.stat().st_size,
                    "seconds": round(time.time() - t0, 1), "input_shape": list(example.shape),
                    "details": {"converter": "onnx2tf (flatbuffer_direct, fp32), ai-edge-quantizer (int8)",
                                "ranges": opts.ranges, "calibration_images": q.calibration_images,
                                "float_op_types": list(q.float_types), "float_ops_of_those_types": len(q.always_float),
                                **details,
                                **tensor_types(final)}}
        rec = write_record(run, out, res_json, parity, extra)
        summary["targets"][name] = summary_row(rec, parity, res_json["details"])
        log(f"  {name}: {parity.status.upper()} on test: agreement {parity.pixel_agreement:.3f} %, mask mIoU "
            f"{parity.mask_miou:.4f}, dataset mIoU drop {parity.miou_drop if parity.miou_drop is not None else 0:+.4f}"
            f" ({final.stat().st_size / 1e6:.2f} MB)")
        return final, rec, parity

    full_bytes = q.quantize()
    full_path, _, full_parity = write("tflite-int8-aeq", full_bytes, {"float_ops": []})
    failures = [] if full_parity.passed or opts.mixed_precision else \
        [f"tflite-int8-aeq: {'; '.join(full_parity.failures)}"]
    if not opts.mixed_precision:
        return failures
    found, record = search_ops(q, reference, val, ckpt.class_names, thresholds, work / "aeq-search.tflite",
                               opts.max_float_macs, opts.max_float_layers, log)
    by_index = {o.index: o for o in q.candidates()}
    if not found.needed:
        log("  mixed precision not needed: full int8 passes on the validation split")
        summary["mixed"] = record
        if not full_parity.passed:  # passes where it was searched, not where it is measured: the gate says so
            failures.append(f"tflite-int8-aeq: passes on the validation split but not on test: "
                            f"{'; '.join(full_parity.failures)}")
        return failures
    if not found.keep:
        failures.append(f"tflite-int8-aeq: {'; '.join(full_parity.failures)} (no op kept in float within "
                        f"--max-float-macs {opts.max_float_macs:g} % improved on full int8)")
        summary["mixed"] = record
        return failures
    keep, val_res, search_seconds = found.keep, found.result, found.seconds
    from edgeseg.core.latency import measure_latency

    mixed_bytes = q.quantize(keep)
    details = {"float_ops": [{"op": i, "type": by_index[i].type, "macs": by_index[i].macs} for i in keep],
               "float_macs_pct": round(100 * q.float_macs(keep), 2),
               "search": {"validation": JUDGE.figures(val_res), "tried": len(found.tried), "seconds": search_seconds}}
    path, rec, parity = write("tflite-int8-aeq-mixed", mixed_bytes, details)
    x = np.asarray(calib[0][:1], np.float32)
    lat = {name: measure_latency(load(p), x, 10, 2)["median_ms"]
           for name, p in (("fp32", fp32.path), ("full_int8", full_path), ("mixed", path))}
    summary["mixed"] = {**record, "name": "tflite-int8-aeq-mixed", "float_ops": details["float_ops"],
                        "pixel_agreement": parity.pixel_agreement, "mask_miou": parity.mask_miou,
                        "size_cost_bytes": rec["size_bytes"] - full_path.stat().st_size, "latency_ms": lat}
    log(f"  mix: {len(keep)} float op(s), {details['float_macs_pct']} % of MACs; latency fp32 {lat['fp32']:.2f} / "
        f"int8 {lat['full_int8']:.2f} / mix {lat['mixed']:.2f} ms; search {search_seconds:.0f} s")
    if not val_res.passed:
        failures.append(f"tflite-int8-aeq-mixed: no mix within {opts.max_float_macs:g} % float MACs and "
                        f"{opts.max_float_layers} ops passes on validation (best: {val_res.pixel_agreement:.3f} %, "
                        f"mask mIoU {val_res.mask_miou:.4f}); on test: {'; '.join(parity.failures) or 'passed'}")
    elif not parity.passed:
        failures.append(f"tflite-int8-aeq-mixed: passes on the validation split but not on test: "
                        f"{'; '.join(parity.failures)}")
    return failures
