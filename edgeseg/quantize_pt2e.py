"""``edgeseg quantize --method pt2e``: quantization-aware fine-tuning whose int8 grid is the file's.

1. The float model is captured with ``torch.export``, BatchNorm folded, and LiteRT's int8 quantizers inserted
   (:mod:`exporters.tflite_pt2e`); their ranges start from the calibration images.
2. ``--epochs N`` (N >= 1): the fake-quantized graph is fine-tuned on the training split exactly like ``--method
   qat`` (:func:`edgeseg.quantize.fine_tune`: distillation towards the float model, the run's loss at
   ``--task-weight``), with moving-average ranges during the first epoch and ranges frozen after it, so later
   epochs adapt the weights to a fixed grid. ``--epochs 0``: post-training quantization (histogram ranges).
3. ``convert_pt2e`` turns the fake quantizers into quantize/dequantize nodes — the int8 model as PyTorch computes
   it — and litert-torch lowers that graph to int8 TFLite ops with the same scales and zero points.

``tflite-int8-pt2e`` is checked against the float model on the test split like every export, and the summary also
records the PyTorch fake-quant model's parity and the file's pixel agreement with that model (how exactly the
file is the model that was trained: the gap is the int8 kernels' own rounding).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from edgeseg.atomic import ensure_dir
from edgeseg.errors import ExportError
from edgeseg.parity import compare


def quantize_pt2e(run: Path, ckpt, model, example, calib, test, reference, thresholds, opts, base_opts,
                  extra: dict, summary: dict, log: Callable[[str], None]) -> list[str]:
    """Write ``tflite-int8-pt2e``; returns the failures."""
    from exporters import ExporterError, tflite_metadata
    from exporters import tflite_pt2e as pt2e
    from exporters.tflite import load, model_info, tensor_types
    from exporters.tflite_litert import op_types

    from edgeseg.atomic import atomic_path
    from edgeseg.bench import torch_runner
    from edgeseg.progress import progress_bar
    from edgeseg.quantize import _summary_row, _torch_parity, _write_record, fine_tune

    t0 = time.time()
    qat = opts.epochs > 0
    n_calib = sum(len(c) for c in calib)
    try:
        with progress_bar(sum((len(c) + 7) // 8 for c in calib),
                          f"PT2E {'QAT' if qat else 'PTQ'}: capture + calibration ({n_calib} images)") as bar:
            graph, quantizer = pt2e.prepare(model, example, calib, qat=qat, progress=bar.advance)
        if qat:
            def freeze_after_first(epoch: int) -> None:
                if epoch == 0 and opts.epochs > 1:
                    pt2e.freeze_ranges(graph)
                    log("int8 ranges frozen after epoch 1; later epochs adapt the weights to them")

            fine_tune(pt2e.nchw_view(graph), ckpt, opts, log, on_epoch_end=freeze_after_first)
        pt2e.freeze_ranges(graph)
        converted = pt2e.convert(graph)
        quantize_seconds = time.time() - t0
        log("litert-torch: converting the int8 graph ...")
        data, convert_seconds = pt2e.to_tflite(converted, example, quantizer)
    except ExporterError as e:
        raise ExportError(f"tflite-int8-pt2e: {e}") from None
    fake = pt2e.nchw_view(converted)
    fq = _torch_parity(fake, reference, *test, ckpt, thresholds,
                       runtime="PyTorch, PT2E fake quantization (convert_pt2e graph)")
    summary["pytorch_fake_quant"] = {"pixel_agreement": fq.pixel_agreement, "mask_miou": fq.mask_miou,
                                     "exported_miou": fq.exported_miou, "reference_miou": fq.reference_miou}
    log(f"PyTorch with PT2E fake quantization: agreement {fq.pixel_agreement:.3f} %, mask mIoU {fq.mask_miou:.4f}")
    name = "tflite-int8-pt2e"
    out = ensure_dir(run / "export" / name)
    final = out / "model.tflite"
    with atomic_path(final) as tmp:
        tmp.write_bytes(tflite_metadata.populate(data, model_info(base_opts)))
    runner = load(final)
    parity = compare(reference, runner, *test, ckpt.class_names, thresholds, "tflite", "int8",
                     runtime=runner.runtime)
    # the file against the model it was converted from: what the int8 kernels' own rounding changes
    same = compare(torch_runner(fake, 2), runner, *test, ckpt.class_names, thresholds, "pytorch-fake-quant", "int8")
    summary["tflite_vs_fake_quant"] = {"pixel_agreement": same.pixel_agreement, "mask_miou": same.mask_miou,
                                       "agreement_gap_points": round(fq.pixel_agreement - parity.pixel_agreement, 4)}
    summary["quantize_seconds"] = round(quantize_seconds, 1)
    ops = op_types(final)
    details = {"converter": "PT2E (torch.export) + LiteRT PT2EQuantizer + litert-torch",
               "quantization": "QAT" if qat else "PTQ", "epochs": opts.epochs,
               "calibration_images": n_calib, "convert_seconds": round(convert_seconds, 1),
               "int8_ops": {k: v["int8"] for k, v in ops.items() if v.get("int8")},
               "float_ops": {k: v["float32"] for k, v in ops.items()
                             if v.get("float32") and k not in ("QUANTIZE", "DEQUANTIZE")},
               "fake_quant_agreement": fq.pixel_agreement, **tensor_types(final)}
    res_json = {"target": "tflite", "precision": "int8", "path": str(final), "size_bytes": final.stat().st_size,
                "seconds": round(time.time() - t0, 1), "input_shape": list(example.shape), "details": details}
    rec = _write_record(run, out, res_json, parity, extra)
    summary["targets"][name] = _summary_row(rec, parity, details)
    log(f"  {name}: {parity.status.upper()} on test: agreement {parity.pixel_agreement:.3f} % (fake-quant PyTorch "
        f"{fq.pixel_agreement:.3f} %, file vs fake-quant {same.pixel_agreement:.3f} %), mask mIoU "
        f"{parity.mask_miou:.4f} ({final.stat().st_size / 1e6:.2f} MB)")
    return [] if parity.passed else [f"{name}: {'; '.join(parity.failures)}"]
