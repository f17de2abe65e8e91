"""The NNCF routes (``ptq``, ``qat``, ``accuracy``): NNCF quantizes the PyTorch model (or, for accuracy control, its
ONNX graph), then each target takes it its own way (module docstring of :mod:`edgeseg.quantize.run`), and the TFLite
file's mixed precision is the one search over its ops by the mask metric (:func:`edgeseg.quantize.aeq.search_ops`)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.atomic import ensure_dir
from edgeseg.core.errors import CheckFailed, ExportError
from edgeseg.quantize.finetune import fine_tune
from edgeseg.quantize.options import QuantizeOptions
from edgeseg.quantize.records import summary_row, torch_parity, write_record
from edgeseg.quantize.job import Job
from edgeseg.tasks.semantic.parity import compare


def quantize_nncf(job: Job) -> list[str]:
    """Quantize with NNCF (``job.opts.method``: ptq, qat or accuracy) and write + check every target; returns the
    failures."""
    from exporters import TARGETS as EXPORTERS
    from exporters import ExporterError

    run, ckpt, model, example, calib = job.run, job.ckpt, job.model, job.example, job.calib
    val, test = job.val, job.test
    reference, thresholds, opts, base_opts, log, summary = (job.reference, job.thresholds, job.opts, job.base_opts,
                                                           job.log, job.summary)
    work = base_opts.work_dir
    t0 = time.time()
    quantized = adapted = onnx_q = None
    if opts.method in ("ptq", "qat"):
        from exporters.nncf_tools import float_weights, ptq

        log(f"NNCF post-training quantization ({opts.preset}, {len(calib)} calibration images) ...")
        try:
            quantized = ptq(model, calib, opts.preset, opts.ignored, opts.fast_bias_correction)
        except ExporterError as e:
            raise ExportError(str(e)) from None
        if opts.method == "qat":
            quantized = fine_tune(quantized, ckpt, opts, log)
        fq = torch_parity(quantized, reference, *test, ckpt, thresholds)
        summary["pytorch_fake_quant"] = {"pixel_agreement": fq.pixel_agreement, "mask_miou": fq.mask_miou,
                                         "exported_miou": fq.exported_miou, "reference_miou": fq.reference_miou}
        log(f"PyTorch with fake quantization: agreement {fq.pixel_agreement:.3f} %, mask mIoU {fq.mask_miou:.4f}")
        adapted = copy.deepcopy(model)  # NNCF quantized a copy: this one holds the (equalized) float weights
        adapted.load_state_dict(float_weights(quantized, adapted))
        adapted.eval()
    else:
        onnx_q = _accuracy_control(model, ckpt, calib, val, opts, work, log)
    summary["quantize_seconds"] = round(time.time() - t0, 1)
    failures: list[str] = []
    for target in opts.targets:
        precision = "w8a8" if target == "coreml" else "int8"
        name = f"{target}-{precision}-{opts.method}"
        out = ensure_dir(run / "export" / name)
        log(f"exporting {name} ...")
        try:
            if opts.method == "accuracy":
                res = _export_accuracy(target, onnx_q, example, out)
            elif target in ("onnx", "openvino"):
                res = EXPORTERS[target].export(quantized, example, base_opts.replace(quantized=True), out)
            elif target == "coreml":
                res = EXPORTERS[target].export(adapted, example, base_opts.replace(precision="w8a8"), out)
            else:
                res = EXPORTERS[target].export(adapted, example, base_opts, out)
        except ExporterError as e:
            raise ExportError(f"{name}: {e}") from None
        runner = EXPORTERS[target].load(res.path)
        parity = compare(reference, runner, *test, ckpt.class_names, thresholds, target, precision,
                         runtime=runner.runtime)
        rec = write_record(run, out, res.to_json(), parity, job.extra)
        summary["targets"][name] = summary_row(rec, parity, {k: v for k, v in res.details.items()
                                                             if k in ("tensor_dtypes", "runtime_precisions", "ops",
                                                                      "input_dtype", "int8_weights")})
        log(f"  {name}: {parity.status.upper()} agreement {parity.pixel_agreement:.3f} %, mask mIoU "
            f"{parity.mask_miou:.4f} ({res.size_bytes / 1e6:.2f} MB)")
        if target == "tflite" and opts.mixed_precision:
            summary["mixed"] = _mixed(job, adapted, res)
        elif not parity.passed:
            failures.append(f"{name}: {'; '.join(parity.failures)}")
    return failures


def _accuracy_control(model, ckpt, calib, val, opts: QuantizeOptions, work: Path, log):
    """NNCF accuracy-controlled quantization on the ONNX backend; returns the path of the QDQ ONNX model."""
    from exporters.nncf_tools import import_nncf
    from exporters.native import quiet_native
    from exporters.onnx import INPUT_NAME, write_onnx

    import onnx
    import onnxruntime as ort

    from edgeseg.core.metrics import confusion, mean_iou

    nncf = import_nncf()
    fp = work / "float.onnx"
    write_onnx(model, calib[0], fp)
    images, masks = val
    n_cls = ckpt.num_classes

    def validate(qmodel: onnx.ModelProto, items) -> float:
        sess = ort.InferenceSession(qmodel.SerializeToString(), providers=["CPUExecutionProvider"])
        cm = np.zeros((n_cls, n_cls), np.int64)
        for img, mask in items:
            pred = sess.run(None, {INPUT_NAME: img[None]})[0].argmax(1)[0]
            cm += confusion(mask, pred, n_cls)
        return float(mean_iou(cm))

    log(f"accuracy-controlled quantization (ONNX backend, max mIoU drop {opts.max_drop}) ...")
    with quiet_native() as text:
        try:
            q = nncf.quantize_with_accuracy_control(
                onnx.load(str(fp)), nncf.Dataset([{INPUT_NAME: c} for c in calib]),
                nncf.Dataset(list(zip(images, masks))), validate, max_drop=opts.max_drop,
                drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset(opts.preset),
                subset_size=len(calib), fast_bias_correction=opts.fast_bias_correction)
        except Exception as e:  # noqa: BLE001 - NNCF raises many types; keep its words
            raise ExportError(f"NNCF accuracy control failed: {e}\n{text.getvalue()[-1500:]}") from None
    log_text = text.getvalue()
    reverted = [ln.strip() for ln in log_text.splitlines() if "revert" in ln.lower() or "Reverted" in ln][:20]
    opts.notes.append("accuracy control: " + ("; ".join(reverted) if reverted else "no quantizer reverted"))
    out = work / "accuracy.onnx"
    onnx.save(q, str(out))
    return out




def _export_accuracy(target: str, onnx_q: Path, example, out: Path):
    """The accuracy-controlled QDQ ONNX model as an ONNX or OpenVINO export."""
    import shutil

    from exporters import ExportResult
    from exporters.base import path_size
    from exporters.onnx import fold_weight_quantization, op_counts

    t0 = time.time()
    if target == "onnx":
        final = out / "model.onnx"
        from edgeseg.core.atomic import atomic_path

        with atomic_path(final) as tmp:
            shutil.copy(onnx_q, tmp)
            folded = fold_weight_quantization(tmp)
        return ExportResult("onnx", "int8", final, path_size(final), time.time() - t0, tuple(example.shape),
                            {"quantizer": "NNCF quantize_with_accuracy_control (ONNX backend)",
                             "int8_weights": folded, "ops": op_counts(final)})
    from exporters.openvino import from_onnx

    return from_onnx(onnx_q, example, out, "NNCF quantize_with_accuracy_control (ONNX backend)")




def _mixed(job: Job, adapted, full) -> dict[str, Any]:
    """Mixed precision for the TFLite export ``full`` (already written and checked on the test split): the one
    search over the ops of the adapted model's int8 file (:func:`edgeseg.quantize.aeq.search_ops`: ops ranked by the
    validation mask mIoU they gain alone, then the ranking and graph order walked, within ``--max-float-macs``)."""
    run, ckpt, example, calib, val, test = job.run, job.ckpt, job.example, job.calib, job.val, job.test
    reference, thresholds, opts, base_opts, log = job.reference, job.thresholds, job.opts, job.base_opts, job.log
    work = base_opts.work_dir
    from exporters import ExporterError, tflite_metadata
    from exporters.tflite import float_file, float_ops, load, model_info, tensor_types
    from exporters.tflite_aeq import DEFAULT_FLOAT_TYPES, Int8Quantizer

    from edgeseg.core.atomic import atomic_path
    from edgeseg.core.latency import measure_latency
    from edgeseg.quantize.aeq import search_ops

    images, masks = val
    plain = compare(reference, load(full.path), images, masks, ckpt.class_names, thresholds, "tflite", "int8")
    if plain.passed:
        log(f"  mixed precision not needed: full int8 passes on the validation split ({plain.pixel_agreement:.3f} %)")
        return {"needed": False, "validation_agreement": plain.pixel_agreement}
    log(f"  full int8 misses the threshold on the validation split ({plain.pixel_agreement:.3f} %); searching ...")
    try:
        path, _ = float_file(adapted, example, base_opts)
        q = Int8Quantizer(path.read_bytes(), calib, "minmax", DEFAULT_FLOAT_TYPES)
    except ExporterError as e:
        raise ExportError(f"tflite mixed precision: {e}") from None
    found, record = search_ops(q, reference, val, ckpt.class_names, thresholds, work / "nncf-search.tflite",
                               opts.max_float_macs, opts.max_float_layers, log)
    if not found.passed:
        res = found.result
        raise CheckFailed(f"mixed precision: no mix within {opts.max_float_macs:g} % of the multiply-adds in float "
                          f"({opts.max_float_layers} steps) reaches the threshold "
                          f"({'; '.join(f'{a} {v}' for a, v in res.thresholds.items())}) on held-out data; best: "
                          f"{len(found.keep)} float op(s), {res.pixel_agreement:.3f} % agreement, mask mIoU "
                          f"{res.mask_miou:.4f}. Raise --max-float-macs, try --method qat, or lower the threshold")
    name = f"tflite-int8-{opts.method}-mixed"
    out = ensure_dir(run / "export" / name)
    final = out / "model.tflite"
    with atomic_path(final) as tmp:
        tmp.write_bytes(tflite_metadata.populate(q.quantize(found.keep), model_info(base_opts)))
    runner = load(final)
    parity = compare(reference, runner, *test, ckpt.class_names, thresholds, "tflite", "int8", runtime=runner.runtime)
    x = np.asarray(calib[0], np.float32)
    lat_full = measure_latency(load(full.path), x, 10, 2)["median_ms"]
    lat_mixed = measure_latency(runner, x, 10, 2)["median_ms"]
    types = tensor_types(final)
    by_index = {o.index: o for o in q.candidates()}
    mixed = {"float_ops": [{"op": i, "type": by_index[i].type, "macs": by_index[i].macs} for i in found.keep],
             "float_macs_pct": found.float_macs_pct, "float_ops_in_file": float_ops(final), "search": record,
             "size_cost_bytes": final.stat().st_size - full.size_bytes,
             "latency_ms": {"full_int8": lat_full, "mixed": lat_mixed}}
    res_json = {"target": "tflite", "precision": "int8", "path": str(final), "size_bytes": final.stat().st_size,
                "seconds": 0.0, "input_shape": list(example.shape),
                "details": {"converter": "onnx2tf (flatbuffer_direct) + ai-edge-quantizer, ops kept float by the "
                                         "mask-metric search", "mixed_precision": mixed, **types}}
    write_record(run, out, res_json, parity, {**job.extra, "mixed_precision": True})
    log(f"  {name}: {len(found.keep)} float op(s), {parity.status.upper()} on test: agreement "
        f"{parity.pixel_agreement:.3f} %, mask mIoU {parity.mask_miou:.4f}; size +{mixed['size_cost_bytes'] / 1e3:.1f} "
        f"KB, latency {lat_full:.2f} -> {lat_mixed:.2f} ms")
    if not parity.passed:
        raise CheckFailed(f"{name}: passes on the validation split but not on the test split: "
                          f"{'; '.join(parity.failures)}")
    return {"needed": True, "name": name, "pixel_agreement": parity.pixel_agreement, "mask_miou": parity.mask_miou,
            **mixed}
