"""Mask R-CNN ``tflite int8-mixed``: int8 convolutions and fully-connected layers, with the few layers that break
instances kept in float, found by the instance-parity metric on the validation split.

1. The float file is converted and calibrated once (:func:`exporters.tflite_litert.int8_quantizer`); a candidate
   mix then costs one quantization and one instance-parity check (~2 s at 64 px on 8 images here).
2. Full int8 first; if it passes the int8 gate, nothing is kept in float.
3. *Sensitivity by the instance metric*: each convolution / fully-connected op alone in float (the rest int8) is
   checked; ops rank by gates failed, missed + extra detections, then the matched mask and box IoU they give.
   Measured on the MobileNetV3 Mask R-CNN (runs/mrcnn, 64 px): one FPN-input convolution alone lifts the matched
   mask IoU from 0.841 to 0.955 and box IoU from 0.853 to 0.953; no other op moves it by more than 0.006. (A
   prefix in graph order, the semantic models' fix, does not help here: the first 52 of 88 ops in float, 10 % of
   the MACs, gave 0.837.)
4. *Search*: the ranked ops are kept in float cumulatively, one more per step (an op that would exceed
   ``max_float_macs`` % of the multiply-adds is skipped), until the mix passes or ``max_steps`` ops are float.
   Steps 2-5 are the one search of every int8 route (:mod:`edgeseg.core.mixed_precision`), judged by instance
   parity; this graph walks the ranked order only.
5. The passing mix with the fewest float multiply-adds (a single op that passes alone counts) is written; if none
   passes, the closest miss (fewest failed gates, then fewest missed + extra, then the best mask IoU), and the
   export's parity on the test split says it failed.

The test split is not looked at during the search; it measures the result.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from edgeseg.core.mixed_precision import DEFAULT_MAX_FLOAT_MACS, Policy, Space, search
from edgeseg.tasks.instance.parity import JUDGE

DEFAULT_MAX_STEPS = 12
# the ranked order only: a prefix in graph order does not help this graph (module docstring, step 3)
ORDERS = ("ranked",)


def search_mix(q, evaluate: Callable[[bytes], Any], max_float_macs: float = DEFAULT_MAX_FLOAT_MACS,
               max_steps: int = DEFAULT_MAX_STEPS, log: Callable[[str], None] = print,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The cheapest mix of ``q``'s convolution/fully-connected ops kept in float whose file passes ``evaluate``
    (bytes -> :class:`~edgeseg.tasks.instance.parity.InstanceParity`), within ``max_float_macs`` % of the multiply-adds:
    the one search (:mod:`edgeseg.core.mixed_precision`) over ``q``'s ops, judged by instance parity.
    Returns ``{"float_ops", "float_op_types", "float_op_scopes", "passed", "validation", "ranking", "tried",
    "seconds", ...}``."""
    cands = [o for o in q.candidates() if o.macs > 0]
    by_index = {o.index: o for o in cands}
    space = Space(candidates=[o.index for o in cands], evaluate=lambda keep, quick: evaluate(q.quantize(keep)),
                  float_macs=q.float_macs, quick_is_full=True,
                  describe=lambda i: {"op": i, "type": by_index[i].type, "scope": by_index[i].scope})
    found = search(space, JUDGE, Policy(max_float_macs, max_steps, ORDERS), log, progress)
    keep = found.keep
    return {"float_ops": keep, "float_op_types": [by_index[i].type for i in keep],
            "float_op_scopes": [by_index[i].scope for i in keep], "passed": found.passed,
            "validation": {"float_macs_pct": found.float_macs_pct, **JUDGE.figures(found.result)},
            "ranking": found.ranking, "tried": found.tried, "trials": len(found.tried), "candidates": len(cands),
            "max_float_macs": max_float_macs, "seconds": found.seconds}


def instance_evaluator(model, images: Sequence[np.ndarray], counts, targets: Sequence[dict] | None = None,
                       thresholds: dict[str, float | None] | None = None, score_threshold: float = 0.3
                       ) -> Callable[[bytes], Any]:
    """``evaluate(tflite_bytes)``: the file's instance parity on ``images`` (HWC uint8) against the eager model
    (computed once), with the int8 gate and ``thresholds``' overrides; ``targets`` add the mask-AP gate."""
    from edgeseg.tasks.instance.check import check_instance, load_runner, reference_detections
    from edgeseg.tasks.instance.parity import instance_thresholds

    refs = reference_detections(model, images, counts)
    gate = instance_thresholds("int8", **(thresholds or {}))

    def evaluate(data: bytes):
        return check_instance(model, load_runner("tflite", data, threads=2), "tflite", "int8-mixed", images, targets,
                              counts, gate, score_threshold, references=refs)

    return evaluate


def export_mixed(graph, model, example: np.ndarray, path, calibration: Sequence[np.ndarray],
                 validation: Sequence[np.ndarray], counts, validation_targets: Sequence[dict] | None = None,
                 max_float_macs: float = DEFAULT_MAX_FLOAT_MACS, score_threshold: float = 0.3,
                 thresholds: dict[str, float | None] | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Search (on ``validation``, HWC uint8 images; with ``validation_targets`` the mask-AP gate applies too) and
    write the int8-mixed file of ``graph`` to ``path``. ``thresholds``: overrides of the int8 instance gate."""
    from edgeseg.core.errors import UsageError
    from edgeseg.tasks.instance.check import to_input
    from exporters.tflite_litert import int8_quantizer, write_quantized

    if not validation:
        raise UsageError("int8-mixed searches on the validation split, and it is empty")
    log(f"int8-mixed: converting and calibrating on {len(calibration)} training images ...")
    q = int8_quantizer(graph, example, [to_input(c) for c in calibration])
    evaluate = instance_evaluator(model, validation, counts, validation_targets, thresholds, score_threshold)
    log(f"int8-mixed: searching on {len(validation)} validation images (gate: int8 instance parity, at most "
        f"{max_float_macs:g} % of MACs in float) ...")
    from edgeseg.core.progress import progress_bar

    with progress_bar(sum(o.macs > 0 for o in q.candidates()), "int8-mixed sensitivity") as bar:
        found = search_mix(q, evaluate, max_float_macs, log=log, progress=lambda i, n: bar.advance())
    details = write_quantized(q, found["float_ops"], path)
    details.update(convert_seconds=q.seconds, float_macs_pct=found["validation"]["float_macs_pct"], search=found)
    return details
