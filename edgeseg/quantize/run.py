"""``edgeseg quantize``: int8 that keeps masks intact — NNCF PTQ, QAT, accuracy control, mask-driven mixed precision.

Every method ends in exports under ``RUN/export/<target>-int8-<method>`` (Core ML: ``coreml-w8a8-<method>``), each
checked against the **original full-precision model** on the test split (``parity.json``), so ``report`` and
``bundle`` take them like any other export.

* ``ptq``: ``nncf.quantize`` on the PyTorch model (calibration subset of the training split, preset, ignored
  scope, fast or full bias correction).
* ``qat``: PTQ, then the NNCF-quantized model is fine-tuned for ``epochs`` with the run's training loss on the
  training data plus a distillation term towards the float model's scores (``distill``: what keeps the exported
  masks equal to the reference, which is what ``check`` measures), BatchNorm statistics frozen.
* ``accuracy``: ``nncf.quantize_with_accuracy_control`` on the ONNX backend, the validation function being the
  dataset mIoU on the validation split, ``max_drop`` its allowed absolute drop; NNCF reverts the most harmful
  quantizers to float until the drop holds. The result is a QDQ ONNX model, for the ONNX and OpenVINO targets.
* ``aeq``: ai-edge-quantizer on the float model's own TFLite file (TFLite only), with its own mixed-precision
  search by the validation mask metric (:mod:`edgeseg.quantize.aeq`).
* ``pt2e``: ``torch.export`` + LiteRT's PT2E quantizer, fine-tuned like ``qat`` on the int8 grid that litert-torch
  then writes into the file unchanged (TFLite only, :mod:`edgeseg.quantize.pt2e`); ``epochs`` 0 is PTQ.

How each target takes the quantized model: ONNX (QDQ) and OpenVINO (IR int8) convert NNCF's own quantizers.
TFLite and Core ML have their own int8 quantizers, and QDQ ONNX through onnx2tf yields a float TFLite (measured),
so they take the quantization-adapted float weights (bias-corrected by PTQ, fine-tuned by QAT) and calibrate their
own full-int8 (TFLite) or W8A8 (Core ML) quantization on the same calibration images; the TFLite record lists the
tensor types as proof that the file is int8.

Cross-layer equalization (``equalize``, :mod:`edgeseg.quantize.equalize`): before any of ptq, qat, aeq and pt2e the model's
channels between two convolutions are rescaled (float outputs unchanged) so int8 keeps more of them; the
reference every export is checked against stays the original model.

Mixed precision (``mixed_precision``, TFLite): when the int8 file misses the parity threshold on the validation
split, the TF Lite converter's quantization debugger measures each layer's error on calibration data
(RMSE / scale); the most sensitive layers are kept in float one at a time, re-converting and re-checking on the
validation split, until the threshold holds; the kept layers, and the size and latency cost, are recorded. The
search never looks at the test split, which then measures the result.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.core.atomic import ensure_dir, write_json
from edgeseg.core.errors import CheckFailed, DataError, ExportError, UsageError
from edgeseg.core.digest import file_digest
from edgeseg.quantize.finetune import fine_tune
from edgeseg.quantize.options import MIN_CALIBRATION, WARN_CALIBRATION, QuantizeOptions, validate
from edgeseg.quantize.records import summary_row, torch_parity, write_record
from edgeseg.tasks.semantic.parity import ParityResult, compare, thresholds_for

def _calibration(ckpt, count: int, log: Callable[[str], None]) -> list[np.ndarray]:
    from edgeseg.tasks.semantic.run import calibration_images

    if count < MIN_CALIBRATION:
        raise UsageError(f"--calibration {count}: at least {MIN_CALIBRATION} images are needed for int8 ranges "
                         f"(100 or more recommended)")
    calib = calibration_images(ckpt, count)
    if len(calib) < MIN_CALIBRATION:
        raise DataError(f"the training split of '{ckpt.config.data}' has {len(calib)} images; int8 calibration "
                        f"needs at least {MIN_CALIBRATION}")
    if len(calib) < WARN_CALIBRATION:
        log(f"warning: calibrating on {len(calib)} images (fewer than {WARN_CALIBRATION}); int8 ranges may not "
            f"cover real inputs")
    return calib


def _labelled(ckpt, split: str, limit: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Preprocessed images and masks of ``split``; an error when it has none with labels."""
    from edgeseg.data import open_split

    ds = open_split(ckpt.config.data, split, ckpt.config.image_size)
    n = len(ds) if limit is None else min(limit, len(ds))
    images, masks = [], []
    for i in range(n):
        img, m = ds[i]
        mask = ckpt.preprocess.mask(m)
        images.append(ckpt.preprocess.image(img))
        masks.append(mask)
    from edgeseg.core.metrics import IGNORE_INDEX

    ignore = IGNORE_INDEX
    if not masks or not any((m != ignore).any() and (m >= 0).any() for m in masks):
        raise DataError(f"the {split} split of '{ckpt.config.data}' has no labelled images; quantization needs "
                        f"labelled {split} images (the {'search and accuracy control' if split == 'val' else 'check'} "
                        f"measure masks against them)")
    return images, masks


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


def mixed_search(sm: Path, calibration, evaluate: Callable[[Path], ParityResult], max_float_layers: int,
                 work: Path, log: Callable[[str], None] = print) -> tuple[Path, list[dict], list[dict]]:
    """Greedy mixed precision: rank the TFLite layers by quantization sensitivity (the converter's debugger), then
    convert with the top 0, 1, 2, ... of them kept in float and ``evaluate`` each file (parity on held-out data);
    stop at the first that passes. Returns (file, float layers, every try). Raises CheckFailed with the best mix
    when none of up to ``max_float_layers`` passes."""
    from exporters.tflite import convert_mixed, layer_sensitivity

    ranking = layer_sensitivity(sm, calibration)
    tried: list[dict] = []
    best: tuple[int, ParityResult] | None = None
    for k in range(0, min(max_float_layers, len(ranking)) + 1):
        path = work / f"mixed-{k}.tflite"
        path.write_bytes(convert_mixed(sm, calibration, [r["tensor"] for r in ranking[:k]]))
        res = evaluate(path)
        tried.append({"float_layers": k, "pixel_agreement": res.pixel_agreement, "mask_miou": res.mask_miou,
                      "size_bytes": path.stat().st_size})
        log(f"  {k} float layer(s){' (+' + str(ranking[k - 1]['op']) + ')' if k else ''}: agreement "
            f"{res.pixel_agreement:.3f} %, mask mIoU {res.mask_miou:.4f}")
        if best is None or res.pixel_agreement > best[1].pixel_agreement:
            best = (k, res)
        if res.passed:
            return path, ranking[:k], tried
    assert best is not None
    k, res = best
    raise CheckFailed(f"mixed precision: no mix of up to {max_float_layers} float layers reaches the threshold "
                      f"({'; '.join(f'{a} {v}' for a, v in res.thresholds.items())}) on held-out data; best: "
                      f"{k} float layer(s), {res.pixel_agreement:.3f} % agreement, mask mIoU {res.mask_miou:.4f}. "
                      f"Raise --max-float-layers, try --method qat, or lower the threshold")


def quantize_run(run: Path, opts: QuantizeOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Quantize ``run``'s model with ``opts.method`` and export + check every target; returns a summary (also
    written to ``RUN/export/quantize-<method>.json``)."""
    from exporters import TARGETS as EXPORTERS
    from exporters import ExporterError, ExportOptions, Normalization

    from edgeseg.core.latency import torch_runner
    from edgeseg.train.checkpoint import load_checkpoint

    validate(opts)
    ckpt = load_checkpoint(run)
    run = Path(ckpt.path).parent
    for t in opts.targets:
        try:
            EXPORTERS[t].require()
        except ExporterError as e:
            raise ExportError(str(e)) from None
    which = ckpt.weights_choice(opts.weights)
    model = ckpt.build_model(which).eval()
    pre = ckpt.preprocess
    example = np.zeros((1, 3, pre.height, pre.width), np.float32)
    calib = _calibration(ckpt, opts.calibration, log)
    val = _labelled(ckpt, "val")
    test = _labelled(ckpt, "test", opts.limit)
    thresholds = thresholds_for("int8", opts.min_agreement, opts.min_mask_miou, opts.max_miou_drop)
    reference = torch_runner(model, 2)
    digest = file_digest(ckpt.path)
    eq_tag = "" if opts.equalize == "off" else f"-eq-{opts.equalize}"
    work = ensure_dir(run / "export" / ".cache" / f"{digest}-{which}-{opts.method}{eq_tag}")
    import shutil

    for stale in work.glob("tf_savedmodel*"):  # converted from the previous run's weights (other settings)
        shutil.rmtree(stale)
    summary: dict[str, Any] = {"schema": "edgeseg.quantize/1", "method": opts.method, "calibration_images": len(calib),
                               "thresholds": thresholds, "targets": {}}
    t0 = time.time()
    eq_extra: dict[str, Any] = {}
    if opts.equalize != "off":  # the reference stays the original model; every route quantizes the equalized copy
        from edgeseg.quantize.equalize import equalize

        model = copy.deepcopy(model)
        eq = equalize(model, opts.equalize, calib)
        summary["equalization"] = eq.to_json()
        eq_extra = {"equalization": {k: v for k, v in summary["equalization"].items() if k != "equalized"}}
        log(f"cross-layer equalization ({opts.equalize}): {len(eq.pairs)} convolution pair(s), float outputs moved "
            f"by {eq.float_deviation:.1e} of their range")
        if not eq.pairs:
            opts.notes.append(f"--equalize {opts.equalize}: no equalizable convolution pair in this model (every "
                              f"pair passes through hard-swish, ReLU6, a residual or another non-homogeneous step)")
    quantized = None
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
    elif opts.method == "accuracy":
        onnx_q = _accuracy_control(model, ckpt, calib, val, opts, work, log)
    # aeq quantizes the float model's own TFLite file, pt2e captures the model itself (below): nothing to prepare
    summary["quantize_seconds"] = round(time.time() - t0, 1)
    base_opts = ExportOptions(precision="int8", calibration=calib, class_names=ckpt.class_names,
                              normalization=Normalization(tuple(pre.mean), tuple(pre.std)),
                              metadata={"author": "edgeseg", "edgeseg_model": ckpt.config.model,
                                        "quantized_by": {"aeq": "ai-edge-quantizer",
                                                         "pt2e": "PT2E + litert-torch"}.get(opts.method,
                                                                                             f"NNCF {opts.method}"),
                                        "edgeseg_preprocess": json.dumps(pre.to_json()),
                                        "edgeseg_classes": json.dumps([c.to_json() for c in ckpt.classes])},
                              work_dir=work)
    failures = []
    if opts.method == "aeq":
        from edgeseg.quantize.aeq import quantize_aeq

        extra = {"method": "aeq", "weights": which, "classes": list(ckpt.class_names), "preprocess": pre.to_json(),
                 **eq_extra}
        failures += quantize_aeq(run, ckpt, model, example, calib, val, test, reference, thresholds, opts, base_opts,
                                 extra, summary, log)
    if opts.method == "pt2e":
        from edgeseg.quantize.pt2e import quantize_pt2e

        extra = {"method": "pt2e", "weights": which, "classes": list(ckpt.class_names), "preprocess": pre.to_json(),
                 **eq_extra}
        failures += quantize_pt2e(run, ckpt, model, example, calib, val, test, reference, thresholds, opts,
                                  base_opts, extra, summary, log)
    for target in (() if opts.method in ("aeq", "pt2e") else opts.targets):
        precision = "w8a8" if target == "coreml" else "int8"
        name = f"{target}-{precision}-{opts.method}"
        out = ensure_dir(run / "export" / name)
        log(f"exporting {name} ...")
        extra: dict[str, Any] = {"method": opts.method, "weights": which, "classes": list(ckpt.class_names),
                                 "preprocess": pre.to_json(), **eq_extra}
        try:
            if opts.method == "accuracy":
                res = _export_accuracy(target, onnx_q, example, out, base_opts)
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
        rec = write_record(run, out, res.to_json(), parity, extra)
        summary["targets"][name] = summary_row(rec, parity, {k: v for k, v in res.details.items()
                                                             if k in ("tensor_dtypes", "runtime_precisions", "ops",
                                                                      "input_dtype", "int8_weights")})
        log(f"  {name}: {parity.status.upper()} agreement {parity.pixel_agreement:.3f} %, mask mIoU "
            f"{parity.mask_miou:.4f} ({res.size_bytes / 1e6:.2f} MB)")
        if target == "tflite" and opts.mixed_precision:
            summary["mixed"] = _mixed(run, ckpt, adapted, example, calib, val, test, reference, thresholds, opts,
                                      work, base_opts, extra, res, log)
        elif not parity.passed:
            failures.append(f"{name}: {'; '.join(parity.failures)}")
    summary["notes"] = opts.notes
    write_json(run / "export" / f"quantize-{opts.method}.json", summary)
    if failures:
        raise CheckFailed("int8 parity failed for " + "; ".join(failures)
                          + (" (try --mixed-precision for TFLite, or --method qat)" if opts.method == "ptq" else ""))
    return summary


def _export_accuracy(target: str, onnx_q: Path, example, out: Path, base_opts):
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


def _mixed(run, ckpt, adapted, example, calib, val, test, reference, thresholds, opts, work, base_opts, extra,
           full, log) -> dict[str, Any]:
    """Mixed precision for the TFLite export ``full`` (already written and checked on the test split)."""
    from edgeseg.core.latency import measure_latency
    from exporters.tflite import float_ops, load, saved_model, tensor_types

    images, masks = val
    plain = compare(reference, load(full.path), images, masks, ckpt.class_names, thresholds, "tflite", "int8")
    if plain.passed:
        log(f"  mixed precision not needed: full int8 passes on the validation split ({plain.pixel_agreement:.3f} %)")
        return {"needed": False, "validation_agreement": plain.pixel_agreement}
    log(f"  full int8 misses the threshold on the validation split ({plain.pixel_agreement:.3f} %); searching ...")
    sm, _ = saved_model(adapted, example, base_opts)

    def evaluate(path: Path) -> ParityResult:  # the validation split: the test split then measures the result
        return compare(reference, load(path), images, masks, ckpt.class_names, thresholds, "tflite", "int8")

    path, kept, tried = mixed_search(sm, calib, evaluate, opts.max_float_layers, work, log)
    name = f"tflite-int8-{opts.method}-mixed"
    out = ensure_dir(run / "export" / name)
    final = out / "model.tflite"
    from edgeseg.core.atomic import atomic_path
    from exporters import tflite_metadata
    from exporters.tflite import model_info

    with atomic_path(final) as tmp:
        tmp.write_bytes(tflite_metadata.populate(path.read_bytes(), model_info(base_opts)))
    runner = load(final)
    parity = compare(reference, runner, *test, ckpt.class_names, thresholds, "tflite", "int8", runtime=runner.runtime)
    x = np.asarray(calib[0], np.float32)
    lat_full = measure_latency(load(full.path), x, 10, 2)["median_ms"]
    lat_mixed = measure_latency(runner, x, 10, 2)["median_ms"]
    types = tensor_types(final)
    mixed = {"float_layers": [{"op": r["op"], "tensor": r["tensor"], "sensitivity": r["sensitivity"]} for r in kept],
             "float_ops_in_file": float_ops(final), "search": tried, "size_cost_bytes": final.stat().st_size - full.size_bytes,
             "latency_ms": {"full_int8": lat_full, "mixed": lat_mixed}}
    res_json = {"target": "tflite", "precision": "int8", "path": str(final), "size_bytes": final.stat().st_size,
                "seconds": 0.0, "input_shape": list(example.shape),
                "details": {"converter": "TF Lite converter, selective quantization (quantization debugger "
                                         "denylist)", "mixed_precision": mixed, **types}}
    write_record(run, out, res_json, parity, {**extra, "mixed_precision": True})
    log(f"  {name}: {len(kept)} float layer(s), {parity.status.upper()} on test: agreement "
        f"{parity.pixel_agreement:.3f} %, mask mIoU {parity.mask_miou:.4f}; size +{mixed['size_cost_bytes'] / 1e3:.1f} "
        f"KB, latency {lat_full:.2f} -> {lat_mixed:.2f} ms")
    if not parity.passed:
        raise CheckFailed(f"{name}: passes on the validation split but not on the test split: "
                          f"{'; '.join(parity.failures)}")
    return {"needed": True, "name": name, "pixel_agreement": parity.pixel_agreement, "mask_miou": parity.mask_miou,
            **mixed}
