"""The default int8 of a TFLite export (``edgeseg export --target tflite --precision int8``): a ladder of real int8
files, each measured on the run's **validation** split, the first rung that passes the int8 gate kept.

Rung 1 — full int8 with the calibration that measures best on *this* model. Every candidate is a file:

* ``aeq-global`` / ``aeq-minmax``: ai-edge-quantizer on the fp32 file of the weight-equalized model
  (:mod:`edgeseg.quantize.equalize`, float outputs unchanged), with each activation range rule of :data:`RANGES`
  (the global min/max over the calibration images, or ai-edge-quantizer's moving average of per-image extremes),
  per-channel weights, ``HARD_SWISH`` kept float (LiteRT's int8
  hard-swish leaves XNNPACK's fast path: 2x slower than fp32 on MobileNetV3; :mod:`exporters.tflite_aeq`); int8
  input and output (a pixel-input file: uint8 camera bytes in, as MediaPipe and camera code feed them);
* ``aeq-plain-global`` / ``aeq-plain-minmax``: the same without equalization (only when equalization changed the
  model: it has pairs); ``aeq-plain-global`` is the TFLite target's own int8 (a model without pairs: ``aeq-*``).

(Until the TFLite route left TensorFlow, the TF Lite converter's full int8 was a candidate too; on every model
measured it lost to an ai-edge-quantizer file, on masks or on latency: docs/int8.md.)

Each is checked against the float model on the validation split with the int8 gate (agreement, mask mIoU,
dataset-mIoU drop, per-class drop) and timed (LiteRT + XNNPACK, the fastest of 10 runs after 3, 2 threads; a file
whose compute ops and their dtypes are those of a file already timed takes its time: the equalized and plain files
and both range rules run the same kernels, and timing noise — measured up to 25 % between two such files on this
2-core machine — must not choose between them; the masks then do). Of those that pass, the fastest is kept; a candidate within :data:`LATENCY_TIE` of it with
better masks is preferred. Which one wins differs from model to model (docs/int8.md): it is measured.

Rung 2 — learned rounding (AdaRound): not built yet; the record says so (``rung2``).

Rung 3 — when no full-int8 file passes: the one mixed-precision search (:mod:`edgeseg.core.mixed_precision`, the
``quantize --method aeq --mixed-precision`` walk) over the ops of the best-scoring ai-edge-quantizer candidate, at
most ``max_float_macs`` % of the multiply-adds in float.

If no rung passes, the file closest to passing (the task's score: mask mIoU first) is written, so that
``edgeseg check`` measures it on the test split and fails it there. The validation split only chooses; the test
split measures. ``export.json`` (``details.ladder``) lists every file tried with its validation figures, latency and
seconds, the winner and why. The ladder needs a labelled validation split; without one it writes the target's own
int8 file and says why. ``--int8-route direct`` skips the ladder (the target's own int8 file, unmeasured).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.core.atomic import ensure_dir
from edgeseg.core.errors import DataError, ExportError, UsageError
from edgeseg.quantize.options import DEFAULT_MAX_STEPS
from edgeseg.quantize.records import memo
from edgeseg.tasks.semantic.parity import JUDGE, ParityResult, compare, thresholds_for

ROUTES = ("ladder", "direct")  # what ``export --int8-route`` takes
LATENCY_TIE = 0.15  # a file must be more than 15 % faster than a passing one with better masks to win over it
RUNS, WARMUP = 10, 3
RUNG2 = "learned rounding (AdaRound) is not built yet: skipped"
# the activation range rules rung 1 tries (exporters/tflite_aeq.py): the TF Lite converter's global min/max and
# ai-edge-quantizer's moving average of per-image extremes. Neither wins everywhere (docs/int8.md): measured per model.
RANGES = ("global", "minmax")
RANGE_WORDS = {"global": "global min/max ranges", "minmax": "moving-average min/max ranges"}


@dataclass
class Tried:
    """One int8 file the ladder made and measured."""

    name: str
    rung: int
    what: str
    data: bytes = field(repr=False)
    parity: ParityResult
    latency_ms: float
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "rung": self.rung, "what": self.what, "passed": self.parity.passed,
                "validation": JUDGE.figures(self.parity), "failures": self.parity.failures,
                "latency_ms": round(self.latency_ms, 3), "seconds": round(self.seconds, 1), **self.extra}


def choose(tried: list[Tried]) -> tuple[Tried | None, str]:
    """The passing file to keep (the fastest; within :data:`LATENCY_TIE` of it, the better masks), or None."""
    passing = [t for t in tried if t.parity.passed]
    if not passing:
        return None, ""
    fastest = min(t.latency_ms for t in passing)
    near = [t for t in passing if t.latency_ms <= fastest * (1 + LATENCY_TIE)]
    best = max(near, key=lambda t: (JUDGE.score(t.parity), -t.latency_ms))
    why = f"rung {best.rung}: passes the int8 gate on the validation split"
    if len(near) > 1:
        why += (f"; the best masks of the passing files within {LATENCY_TIE:.0%} of the fastest "
                f"({', '.join(t.name for t in near)})")
    elif len(passing) > 1:
        why += f"; the fastest of the files that pass ({', '.join(t.name for t in passing)})"
    return best, why


def export_int8(run: Path, input_kind: str = "image", calibration: int = 100, weights: str | None = None,
                log: Callable[[str], None] = print, max_float_macs: float = 10.0,
                max_steps: int = DEFAULT_MAX_STEPS) -> dict[str, Any]:
    """Climb the ladder for ``run``'s ``tflite-int8[-pixels]`` export; write the winner and its record (returned)."""
    from exporters import TARGETS, ExporterError, tflite_metadata
    from exporters.tflite import float_file, load, model_info, op_signature, to_pixels
    from exporters.tflite_aeq import DEFAULT_FLOAT_TYPES, Int8Quantizer

    from edgeseg.core.latency import measure_latency, torch_runner
    from edgeseg.quantize.aeq import search_ops
    from edgeseg.quantize.equalize import equalize
    from edgeseg.tasks.semantic.run import cache_dir, calibration_images, export_options, validation_samples
    from edgeseg.train.checkpoint import load_checkpoint

    if not 0 < max_float_macs <= 100:
        raise UsageError(f"--max-float-macs is a percentage in (0, 100], got {max_float_macs}")
    if input_kind not in ("image", "pixels"):
        raise UsageError(f"--input {input_kind} does not apply to --target tflite; it takes image or pixels")
    if calibration < 1:
        raise UsageError(f"--calibration must be at least 1, got {calibration}")
    t0 = time.time()
    ckpt = load_checkpoint(run)
    run = Path(ckpt.path).parent
    which = ckpt.weights_choice(weights)
    pre = ckpt.preprocess
    example = np.zeros((1, 3, pre.height, pre.width), np.float32)
    work = cache_dir(run, ckpt, which)
    scratch = ensure_dir(work / f"ladder-{input_kind}")
    calib = calibration_images(ckpt, calibration)
    if not len(calib):
        raise ExportError(f"int8 needs calibration images; the training split of '{ckpt.config.data}' has none")
    int8_opts = export_options(ckpt, "int8", calib, work, "logits", input_kind)
    thresholds = thresholds_for("int8")
    model = ckpt.build_model(which).eval()
    ref_model, _ = ckpt.reference_model(which)  # as check compares: an ONNX import's original file in onnxruntime
    reference = memo(torch_runner(ref_model, 2))
    timing_input = np.asarray(calib[0], np.float32)

    def direct() -> tuple[bytes, float]:
        s = time.time()
        res = TARGETS["tflite"].export(ckpt.build_model(which).eval(), example, int8_opts, ensure_dir(scratch / "direct"))
        return res.path.read_bytes(), time.time() - s

    calib_input = calib if input_kind != "pixels" else [to_pixels(c, pre.mean, pre.std) for c in calib]

    def quantizer(net, tag: str, ranges: str) -> tuple[Any, float]:
        """ai-edge-quantizer calibrated on the fp32 file of ``net`` (its float file cached under ``tag``)."""
        s = time.time()
        fp32_opts = export_options(ckpt, "fp32", calib, ensure_dir(work / tag) if tag else work, "logits", input_kind)
        fp32, _ = float_file(net, example, fp32_opts)  # converted once per model; each range rule reads it
        # pixel input: uint8 camera bytes (MediaPipe and camera code feed uint8 or float32, never int8)
        return (Int8Quantizer(fp32.read_bytes(), calib_input, ranges, DEFAULT_FLOAT_TYPES,
                              input_type="uint8" if input_kind == "pixels" else "int8"), time.time() - s)

    info = model_info(int8_opts)
    try:
        val, labels = validation_samples(ckpt)
    except DataError as e:
        log(f"int8 ladder: {e}; writing the target's own full int8 unmeasured")
        data, seconds = direct()
        return _write(run, ckpt, which, input_kind, example, data, t0,
                      {"converter": "onnx2tf (flatbuffer_direct) + ai-edge-quantizer", "calibration_images": len(calib),
                       "ladder": {"chosen": "direct", "rung": None, "why": f"not measured: {e}", "tried": []}})

    timed: dict[tuple, tuple[str, float]] = {}  # op signature -> (the file timed, its latency)

    def measure(name: str, rung: int, what: str, data: bytes, seconds: float, **extra: Any) -> Tried:
        path = scratch / f"{name}.tflite"
        path.write_bytes(data)
        runner = load(path, threads=2)
        # measured as `edgeseg check` measures: the frame's pixels, dataset figures at the labels' own size
        parity = compare(reference, runner, *val, ckpt.class_names, thresholds, "tflite", "int8",
                         runtime=runner.runtime, labels=labels, to_label=pre.to_label, region=pre.region)
        # the compute ops and their dtypes; (de)quantize steps at the edges of float regions are left out: their
        # cost is a copy, and where they matter the dtypes of the ops around them already differ
        sig = tuple(s for s in op_signature(path) if s[0] not in ("QUANTIZE", "DEQUANTIZE"))
        if sig in timed:  # the same kernels as a file already timed (equalization changes weights, not ops): its
            # time, so that timing noise cannot choose between two files that do the same work
            lat = timed[sig][1]
            extra["timed_as"] = timed[sig][0]
        else:  # the fastest of the runs: what the kernels cost, least disturbed by whatever else the CPU does
            lat = measure_latency(runner, timing_input, RUNS, WARMUP)["min_ms"]
            timed[sig] = (name, lat)
        log(f"  rung {rung} {name}: {JUDGE.show(parity)}, {lat:.2f} ms ({seconds:.0f} s)")
        return Tried(name, rung, what, data, parity, lat, seconds, extra)

    log(f"int8 ladder ({input_kind} input): full-int8 candidates on {len(val[0])} validation images ...")
    tried: list[Tried] = []
    quantizers: dict[str, Any] = {}
    try:
        eq_model = copy.deepcopy(model)
        s = time.time()
        try:
            pairs = equalize(eq_model, "weights", list(calib[:20])).pairs
        except UsageError as e:  # a model torch.fx cannot trace: no equalized candidate, and the record says why
            pairs, no_eq = [], str(e)
        else:
            no_eq = "" if pairs else "no equalizable convolution pair"
        eq_seconds = time.time() - s
        models = [("aeq", eq_model, "equalized-weights")] if pairs else []
        models.append(("aeq-plain" if pairs else "aeq", model, ""))
        candidates = [(f"{base}-{ranges}", net, tag, ranges) for base, net, tag in models for ranges in RANGES]
        for name, net, tag, ranges in candidates:
            q, seconds = quantizer(net, tag, ranges)
            quantizers[name] = q
            data = tflite_metadata.populate(q.quantize(), info)
            what = (f"ai-edge-quantizer full int8 ({'weight-equalized model, ' if tag else ''}{RANGE_WORDS[ranges]}, "
                    f"{', '.join(q.float_types) or 'no op type'} kept float)")
            tried.append(measure(name, 1, what, data, seconds + (eq_seconds if tag else 0.0),
                                 equalized_pairs=len(pairs) if tag else 0,
                                 float_op_types=list(q.float_types),
                                 **({} if tag or not no_eq else {"not_equalized": no_eq})))
    except ExporterError as e:
        raise ExportError(f"tflite int8 ladder: {e}") from None
    chosen, why = choose(tried)
    mixed: dict[str, Any] | None = None
    if chosen is None:
        base = max((t for t in tried if t.name in quantizers), key=lambda t: JUDGE.score(t.parity))
        q = quantizers[base.name]
        log(f"  no full-int8 file passes; rung 2: {RUNG2}; rung 3: mixed precision from {base.name} within "
            f"{max_float_macs:g} % of the multiply-adds in float")
        found, mixed = search_ops(q, reference, val, ckpt.class_names, thresholds, scratch / "search.tflite",
                                  max_float_macs, max_steps, log, labels=labels, preprocess=pre)
        if found.keep:
            by_index = {o.index: o for o in q.candidates()}
            data = tflite_metadata.populate(q.quantize(found.keep), info)
            tried.append(measure(f"{base.name}-mixed", 3, f"{base.what} with {len(found.keep)} op(s) kept float "
                                 f"by the mask-metric search", data, found.seconds,
                                 float_ops=[{"op": i, "type": by_index[i].type, "macs": by_index[i].macs}
                                            for i in found.keep],
                                 float_macs_pct=found.float_macs_pct))
        chosen, why = choose(tried)
        if chosen is None:
            chosen = max(tried, key=lambda t: (JUDGE.score(t.parity), -t.latency_ms))
            why = ("no rung passes on the validation split: the file closest to passing (mask mIoU first) is kept; "
                   "edgeseg check measures it on the test split")
    log(f"  kept {chosen.name}: {why}")
    ladder = {"chosen": chosen.name, "rung": chosen.rung, "why": why, "validation_images": len(val[0]),
              "thresholds": thresholds, "tried": [t.to_json() for t in tried], "rung2": RUNG2,
              "max_float_macs": max_float_macs, **({"mixed_search": mixed} if mixed is not None else {})}
    return _write(run, ckpt, which, input_kind, example, chosen.data, t0,
                  {"converter": chosen.what, "calibration_images": len(calib), "ladder": ladder})


def _write(run: Path, ckpt, which: str, input_kind: str, example: np.ndarray, data: bytes, t0: float,
           details: dict[str, Any]) -> dict[str, Any]:
    """The kept file as ``RUN/export/tflite-int8[-pixels]/model.tflite`` and its record."""
    from exporters.tflite import tensor_types

    from edgeseg.tasks.semantic.run import write_export

    layout = ("NHWC input [1,H,W,3] " + ("RGB pixels 0-255" if input_kind == "pixels" else "normalized")
              + "; output logits [1,H,W,C]")
    return write_export(run, ckpt, which, "tflite", "int8", "model.tflite", data, example, t0,
                        {**details, "output": "logits", "input": input_kind, "layout": layout}, input_kind,
                        tensor_types)
