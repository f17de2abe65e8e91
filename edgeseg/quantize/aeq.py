"""``edgeseg quantize --method aeq``: int8 TFLite by ai-edge-quantizer, mixed precision found by the mask metric.

The float32 TFLite file (the run's own ``export --target tflite`` route, onnx2tf) is calibrated once and quantized
to full int8 (:mod:`exporters.tflite_aeq`). With ``--mixed-precision``, when that file misses the gate on the
**validation** split:

1. *Sensitivity by the mask metric*: every op is kept in float alone (the rest int8) and ``RANK_IMAGES`` evenly
   spaced validation images are checked; the gain in mask mIoU over full int8 on them ranks the ops. (Not the
   converter debugger's RMSE: on CamVid its ranking found no mix that helped masks; measured here, one op alone in
   float moves mask mIoU by at most 0.01 on one CamVid LR-ASPP, 0.06 on another.)
2. *Search*: two orders are walked cumulatively, one op more per step — the ranking, and the graph order from the
   input (measured on CamVid: the error enters in the first layers — the stem convolution's int8 weights alone cost
   0.03 mask mIoU — and every later layer carries it). Each step is one quantization (~0.1 s) and one check.
   Every step is checked on the whole validation split. A step that would put more than ``--max-float-macs`` % of
   the multiply-adds in float ends that order.
3. The cheapest mix (fewest float multiply-adds) that passes is kept; if none does, the best one (highest mask
   mIoU) is written and checked anyway so that its figures are on record, and the command exits 1.

The search never looks at the test split, which then measures the result (``parity.json``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgeseg.core.atomic import ensure_dir
from edgeseg.core.errors import ExportError
from edgeseg.quantize.records import figures, memo
from edgeseg.tasks.semantic.parity import ParityResult, compare

DEFAULT_MAX_FLOAT_MACS = 10.0  # % of multiply-adds allowed in float (the mobile teams' rule of thumb: ~int8 speed)
# Validation images the per-op ranking checks (all of them when fewer). The ranking is most of the search's time
# (one check per op: 110 on LR-ASPP, 150+ on DeepLabV3+); measured on CamVid val (LR-ASPP, 110 ops, no
# equalization) against the ranking on all 101 images: the same five top ops (mask-mIoU gains
# 0.064/0.021/0.033/0.009/0.003 vs 0.060/0.030/0.021/0.009/0.003), 5 of the top 10, Spearman 0.50 over all ops (the
# tail is gains of < 0.002, noise); with --equalize weights the whole search took 146 s instead of 352 s and chose
# the same mix (98.144 % / 0.8994 on val).
RANK_IMAGES = 24


def quantize_aeq(run: Path, ckpt, model, example, calib, val, test, reference, thresholds, opts, base_opts,
                 extra: dict, summary: dict, log: Callable[[str], None]) -> list[str]:
    """Write ``tflite-int8-aeq`` (and ``tflite-int8-aeq-mixed`` when searched); returns the failures."""
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
                    "details": {"converter": "onnx2tf + TF Lite converter (fp32), ai-edge-quantizer (int8)",
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
    images, masks = val
    ref_val = memo(reference)
    scratch = work / "aeq-search.tflite"

    pick = np.linspace(0, len(images) - 1, min(RANK_IMAGES, len(images))).round().astype(int)
    rank_split = ([images[i] for i in pick], [masks[i] for i in pick])

    def evaluate(float_ops, split=(images, masks)) -> ParityResult:
        scratch.write_bytes(q.quantize(float_ops))
        return compare(ref_val, load(scratch), *split, ckpt.class_names, thresholds, "tflite", "int8")

    t_search = time.time()
    plain = evaluate([])
    if plain.passed:
        log(f"  mixed precision not needed: full int8 passes on the validation split ({plain.pixel_agreement:.3f} %, "
            f"mask mIoU {plain.mask_miou:.4f})")
        summary["mixed"] = {"needed": False, "validation": figures(plain)}
        if not full_parity.passed:  # passes where it was searched, not where it is measured: the gate says so
            failures.append(f"tflite-int8-aeq: passes on the validation split but not on test: "
                            f"{'; '.join(full_parity.failures)}")
        return failures
    cands = q.candidates()
    log(f"  full int8 on validation: {plain.pixel_agreement:.3f} %, mask mIoU {plain.mask_miou:.4f}: measuring "
        f"each of {len(cands)} ops kept in float alone on {len(pick)} validation images ...")
    from edgeseg.core.progress import progress_bar

    base = plain if len(pick) == len(images) else evaluate([], rank_split)
    ranking = []
    with progress_bar(len(cands), "sensitivity (mask mIoU)") as bar:
        for op in cands:
            r = evaluate([op.index], rank_split)
            ranking.append({"op": op.index, "type": op.type, "macs": op.macs,
                            "mask_miou_gain": round(r.mask_miou - base.mask_miou, 5),
                            "agreement_gain": round(r.pixel_agreement - base.pixel_agreement, 4)})
            bar.advance()
    ranking.sort(key=lambda r: (-r["mask_miou_gain"], -r["agreement_gain"], r["macs"]))
    budget = opts.max_float_macs / 100.0
    orders = {"ranked": [r["op"] for r in ranking], "from-input": [o.index for o in cands]}
    tried: list[dict] = []
    best: tuple[tuple, list[int], ParityResult] | None = None
    for order_name, order in orders.items():
        for k in range(1, min(opts.max_float_layers, len(order)) + 1):
            keep = order[:k]
            share = q.float_macs(keep)
            if share > budget:
                break
            r = evaluate(keep)
            tried.append({"order": order_name, "float_ops": k, "float_macs_pct": round(100 * share, 2), **figures(r)})
            log(f"  {order_name} {k:2d} float op(s), {100 * share:4.1f} % MACs: agreement {r.pixel_agreement:.3f} %, "
                f"mask mIoU {r.mask_miou:.4f}{'  PASS' if r.passed else ''}")
            # passing beats failing; among passing mixes the fewest float MACs; among failing the best mask mIoU
            key = (1, -share) if r.passed else (0, r.mask_miou)
            if best is None or key > best[0]:
                best = (key, list(keep), r)
            if r.passed:
                break
    search_seconds = round(time.time() - t_search, 1)
    if best is None:
        failures.append(f"tflite-int8-aeq: {'; '.join(full_parity.failures)} (no op can be kept in float within "
                        f"--max-float-macs {opts.max_float_macs:g} %)")
        summary["mixed"] = {"needed": True, "passed": False, "ranking": ranking, "ranking_images": len(pick),
                            "search": tried, "search_seconds": search_seconds}
        return failures
    _, keep, val_res = best
    by_index = {o.index: o for o in q.ops}
    from edgeseg.core.latency import measure_latency

    mixed_bytes = q.quantize(keep)
    details = {"float_ops": [{"op": i, "type": by_index[i].type, "macs": by_index[i].macs} for i in keep],
               "float_macs_pct": round(100 * q.float_macs(keep), 2),
               "search": {"validation": figures(val_res), "tried": len(tried), "seconds": search_seconds}}
    path, rec, parity = write("tflite-int8-aeq-mixed", mixed_bytes, details)
    x = np.asarray(calib[0][:1], np.float32)
    lat = {name: measure_latency(load(p), x, 10, 2)["median_ms"]
           for name, p in (("fp32", fp32.path), ("full_int8", full_path), ("mixed", path))}
    summary["mixed"] = {"needed": True, "passed": bool(val_res.passed), "name": "tflite-int8-aeq-mixed",
                        "float_ops": details["float_ops"], "float_macs_pct": details["float_macs_pct"],
                        "pixel_agreement": parity.pixel_agreement, "mask_miou": parity.mask_miou,
                        "size_cost_bytes": rec["size_bytes"] - full_path.stat().st_size, "latency_ms": lat,
                        "ranking": ranking, "ranking_images": len(pick), "search": tried,
                        "search_seconds": search_seconds}
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
