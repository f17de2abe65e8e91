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

Each method is a :class:`~edgeseg.quantize.route.Route` (what it runs, the targets it writes, its measured defaults);
this module loads the run, the splits and the gate once, equalizes when asked, and hands the route a
:class:`~edgeseg.quantize.route.Job`: ``nncf`` (ptq, qat, accuracy), ``aeq``, ``pt2e``.

Mixed precision (``mixed_precision``, TFLite): when the int8 file misses the parity threshold on the validation
split, the one search (:mod:`edgeseg.core.mixed_precision`) keeps parts of it in float until the gate holds —
ptq/qat/aeq: the int8 file's ops ranked by the validation mask mIoU, then graph order; pt2e: activation tensors of
the fake-quant graph. The kept parts, and the size and latency cost, are recorded. The search never
looks at the test split, which then measures the result.
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
from edgeseg.quantize.job import Job
from edgeseg.quantize.options import MIN_CALIBRATION, WARN_CALIBRATION, QuantizeOptions
from edgeseg.quantize.route import ROUTES, validate
from edgeseg.tasks.semantic.parity import thresholds_for
from edgeseg.tasks.semantic.run import labelled_split

__all__ = ["QuantizeOptions", "quantize_run"]


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
    val = labelled_split(ckpt, "val")
    test = labelled_split(ckpt, "test", opts.limit)
    thresholds = thresholds_for("int8", opts.min_agreement, opts.min_mask_miou, opts.max_miou_drop,
                                opts.max_class_drop)
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
    base_opts = ExportOptions(precision="int8", calibration=calib, class_names=ckpt.class_names,
                              normalization=Normalization(tuple(pre.mean), tuple(pre.std)),
                              metadata={"author": "edgeseg", "edgeseg_model": ckpt.config.model,
                                        "quantized_by": {"aeq": "ai-edge-quantizer",
                                                         "pt2e": "PT2E + litert-torch"}.get(opts.method,
                                                                                             f"NNCF {opts.method}"),
                                        "edgeseg_preprocess": json.dumps(pre.to_json()),
                                        "edgeseg_classes": json.dumps([c.to_json() for c in ckpt.classes])},
                              work_dir=work)
    extra = {"method": opts.method, "weights": which, "classes": list(ckpt.class_names), "preprocess": pre.to_json(),
             **eq_extra}
    job = Job(run, ckpt, model, example, calib, val, test, reference, thresholds, opts, base_opts, extra, summary,
              log)
    failures = ROUTES[opts.method].quantize(job)
    summary.setdefault("quantize_seconds", round(time.time() - t0, 1))
    summary["notes"] = opts.notes
    write_json(run / "export" / f"quantize-{opts.method}.json", summary)
    if failures:
        raise CheckFailed("int8 parity failed for " + "; ".join(failures)
                          + (" (try --mixed-precision for TFLite, or --method qat)" if opts.method == "ptq" else ""))
    return summary


