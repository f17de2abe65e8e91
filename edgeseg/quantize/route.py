"""The Route seam: how an int8 file is obtained.

A :class:`Route` declares what it is, the targets it can write, its measured defaults (fine-tuning epochs and
learning rate, cross-layer equalization) and one ``quantize(job)`` that prepares the model its own way, writes
its exports under ``RUN/export/`` and checks each against the float model; it returns the failures. Every route
that can keep parts of the model in float does so through the one mixed-precision search
(:mod:`edgeseg.core.mixed_precision`), judged by the task's parity. :data:`ROUTES` is the registry that
``edgeseg quantize --method`` names; the export step's own int8 (``export --precision int8``: the ladder over
ai-edge-quantizer files, or for Mask R-CNN the litert-torch graph and its ``int8-mixed`` search) is the target's
route.

Modelled on executorch's recipes (a quantization recipe + a lowering recipe, the quantizer living with its
backend) and litert-torch's frozen quant config: a route refuses the targets it cannot write, by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgeseg.core.errors import UsageError
from edgeseg.quantize.job import Job
from edgeseg.quantize.options import DEFAULT_MAX_STEPS, QuantizeOptions
from edgeseg.tasks.semantic.parity import thresholds_for


@dataclass(frozen=True)
class Route:
    name: str
    what: str  # what it runs, as the refusal of a target says it
    targets: tuple[str, ...]  # what it can write
    default_targets: tuple[str, ...]
    hint: str  # where to go for the targets it cannot write
    quantize: Callable[[Job], list[str]]
    fine_tuning: tuple[int, float] = (2, 1e-5)  # (epochs, learning rate) where the route fine-tunes
    equalize: str = "off"  # cross-layer equalization by default (measured: the comment above ROUTES)
    max_float_layers: int = DEFAULT_MAX_STEPS  # the mixed-precision search's steps (candidates kept float)


def _nncf(job: Job) -> list[str]:
    from edgeseg.quantize.nncf import quantize_nncf

    return quantize_nncf(job)


def _aeq(job: Job) -> list[str]:
    from edgeseg.quantize.aeq import quantize_aeq

    return quantize_aeq(job)


def _pt2e(job: Job) -> list[str]:
    from edgeseg.quantize.pt2e import quantize_pt2e

    return quantize_pt2e(job)


ALL_TARGETS = ("tflite", "onnx", "openvino", "coreml")
_NNCF_DEFAULT = ("tflite", "onnx", "openvino")
_NOT_TFLITE = "Use --targets tflite (Core ML/ONNX/OpenVINO: --method ptq or qat)"

# (epochs, learning rate) of pt2e measured on CamVid val (LR-ASPP, 256 px, distillation, fake-quant agreement / mask
# mIoU): lr 1e-5 x 2 epochs 98.62 % / 0.882; lr 1e-4 per epoch 98.62, 98.88, 98.93, 98.96 % (mask mIoU 0.871 ->
# 0.898), and 98.97, 99.00 % / 0.903 at epochs 5 and 6: 4 epochs keep most of the gain within the 15-minute budget.
# qat: NNCF's grid, ISBI/synthetic (docs/int8.md).
# equalize by route, measured on CamVid val (LR-ASPP MobileNetV3-L, 15 epochs, 256 px; agreement % / mask mIoU of
# the TFLite file, off -> weights): aeq 94.87 / 0.780 -> 96.21 / 0.822; ptq 92.27 / 0.671 -> 91.25 / 0.638 (its
# NNCF fake-quant model gains, 93.71 -> 94.27 %, the converter's file does not); pt2e PTQ 92.89 / 0.751 -> 92.12 /
# 0.727 (fake-quant 92.89 -> 94.06 %, but the file drifts from it: 98.98 -> 96.86 %). On ISBI (LR-ASPP, U-Net) aeq
# is unchanged within 0.03 point either way.
ROUTES: dict[str, Route] = {r.name: r for r in (
    # ptq, qat, aeq: the search walks the int8 file's ops by the mask metric, then graph order
    Route("ptq", "runs NNCF post-training quantization", ALL_TARGETS, _NNCF_DEFAULT, "", _nncf),
    Route("qat", "fine-tunes NNCF's fake-quantized model", ALL_TARGETS, _NNCF_DEFAULT, "", _nncf, (2, 1e-5)),
    Route("accuracy", "runs NNCF's accuracy control, whose backends here are ONNX and OpenVINO",
          ("onnx", "openvino"), ("onnx", "openvino"),
          "For TFLite use --method qat and/or --mixed-precision; for Core ML --method qat (W8A8)", _nncf),
    Route("aeq", "runs ai-edge-quantizer, which quantizes TFLite files", ("tflite",), ("tflite",), _NOT_TFLITE,
          _aeq, equalize="weights"),
    Route("pt2e", "converts the PT2E graph with litert-torch, which writes TFLite", ("tflite",), ("tflite",),
          _NOT_TFLITE, _pt2e, (4, 1e-4)),  # pt2e: activation tensors of the fake-quant graph
)}


def validate(opts: QuantizeOptions) -> None:
    from edgeseg.core.registry import check_choice

    check_choice(opts.method, list(ROUTES), "--method")
    route = ROUTES[opts.method]
    if opts.targets is None:
        opts.targets = route.default_targets
    epochs, lr = route.fine_tuning
    opts.epochs = epochs if opts.epochs is None else opts.epochs
    opts.lr = lr if opts.lr is None else opts.lr
    if opts.max_float_layers is None:
        opts.max_float_layers = route.max_float_layers
    for t in opts.targets:
        check_choice(t, list(ALL_TARGETS), "--targets entry")
    if not opts.targets:
        raise UsageError("--targets is empty; name at least one of " + ", ".join(ALL_TARGETS))
    bad = [t for t in opts.targets if t not in route.targets]
    if bad:  # a route whose back-end writes only some targets: what it is, what it can write, where to go
        raise UsageError(f"--method {opts.method} {route.what}; it cannot produce {', '.join(bad)}. {route.hint}")
    if opts.method == "pt2e":
        if opts.epochs < 0:
            raise UsageError(f"--epochs must be 0 (post-training) or more (QAT) for --method pt2e, got {opts.epochs}")
    from exporters.tflite_aeq import RANGES, unknown_op_types

    check_choice(opts.ranges, list(RANGES), "--ranges")
    from edgeseg.quantize.equalize import MODES

    opts.equalize = route.equalize if opts.equalize is None else opts.equalize
    check_choice(opts.equalize, list(MODES), "--equalize")
    if opts.equalize != "off" and opts.method == "accuracy":
        raise UsageError("--equalize applies to --method ptq, qat, aeq and pt2e (accuracy control quantizes "
                         "the run's own ONNX graph)")
    if opts.ranges != "minmax" and opts.method != "aeq":
        raise UsageError("--ranges applies to --method aeq (NNCF picks its own ranges)")
    if opts.float_types:
        unknown = unknown_op_types(opts.float_types)
        if unknown:
            raise UsageError(f"--float-ops: unknown TFLite op type(s) {', '.join(unknown)} (names as in a .tflite "
                             f"op list, e.g. HARD_SWISH, CONV_2D; or none)")
    if not 0 < opts.max_float_macs <= 100:
        raise UsageError(f"--max-float-macs is a percentage in (0, 100], got {opts.max_float_macs}")
    if opts.mixed_precision and "tflite" not in opts.targets:
        raise UsageError("--mixed-precision searches TFLite layers; add tflite to --targets")
    if opts.method == "qat" and opts.epochs < 1:
        raise UsageError(f"--epochs must be at least 1 for QAT, got {opts.epochs}")
    if opts.lr <= 0:
        raise UsageError(f"--lr must be positive, got {opts.lr}")
    if not 0 < opts.max_drop < 1:
        raise UsageError(f"--max-drop is an absolute mIoU drop in (0, 1), got {opts.max_drop}")
    if opts.preset not in ("performance", "mixed"):
        raise UsageError(f"--preset must be performance (symmetric) or mixed (asymmetric activations), "
                         f"not '{opts.preset}'")
    if opts.max_float_layers < 1:
        raise UsageError(f"--max-float-layers must be at least 1, got {opts.max_float_layers}")
    thresholds_for("int8", opts.min_agreement, opts.min_mask_miou, opts.max_miou_drop,
                   opts.max_class_drop)  # names a bad flag
