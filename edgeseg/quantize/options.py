"""What ``edgeseg quantize`` can be asked: methods, targets, the measured defaults, and the validation that turns
a bad combination into one usage error naming the flag."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeseg.core.errors import UsageError
from edgeseg.tasks.semantic.parity import thresholds_for

METHODS = ("ptq", "qat", "accuracy", "aeq", "pt2e")
TARGETS = ("tflite", "onnx", "openvino", "coreml")
AEQ_TARGETS = ("tflite",)  # ai-edge-quantizer quantizes .tflite files
PT2E_TARGETS = ("tflite",)  # litert-torch converts the PT2E graph
ACCURACY_TARGETS = ("onnx", "openvino")  # where NNCF's accuracy control has a backend (ONNX; OpenVINO reads it)
MIN_CALIBRATION = 16
# (epochs, learning rate) by method. qat: NNCF's grid, ISBI/synthetic (docs/int8.md). pt2e: measured on CamVid val
# (LR-ASPP, 256 px, distillation, fake-quant agreement / mask mIoU): lr 1e-5 x 2 epochs 98.62 % / 0.882;
# lr 1e-4 per epoch 98.62, 98.88, 98.93, 98.96 % (mask mIoU 0.871 -> 0.898), and 98.97, 99.00 % / 0.903 at epochs
# 5 and 6: 4 epochs keep most of the gain within the 15-minute budget.
FINE_TUNING = {"qat": (2, 1e-5), "pt2e": (4, 1e-4)}
# --equalize default by method, measured on CamVid val (LR-ASPP MobileNetV3-L, 15 epochs, 256 px; agreement % /
# mask mIoU of the TFLite file, off -> weights): aeq 94.87 / 0.780 -> 96.21 / 0.822; ptq 92.27 / 0.671 ->
# 91.25 / 0.638 (its NNCF fake-quant model gains, 93.71 -> 94.27 %, the converter's file does not); pt2e PTQ
# 92.89 / 0.751 -> 92.12 / 0.727 (fake-quant 92.89 -> 94.06 %, but the file drifts from it: 98.98 -> 96.86 %).
# On ISBI (LR-ASPP, U-Net) aeq is unchanged within 0.03 point either way.
EQUALIZE = {"aeq": "weights"}
WARN_CALIBRATION = 100
DEFAULT_MAX_STEPS = 40  # aeq/pt2e mixed precision: float ops (tensors) one search order may keep


@dataclass
class QuantizeOptions:
    method: str
    targets: tuple[str, ...] | None = None  # None: tflite for aeq, else tflite, onnx, openvino
    calibration: int = 300
    preset: str = "performance"
    ignored: tuple[str, ...] = ()
    fast_bias_correction: bool = True
    epochs: int | None = None  # None: the method's measured default (FINE_TUNING)
    lr: float | None = None
    distill: float = 1.0
    task_weight: float = 0.0
    max_drop: float = 0.01
    mixed_precision: bool = False
    max_float_layers: int | None = None  # None: 8 for the debugger search, 40 for aeq's
    max_float_macs: float = 10.0
    ranges: str = "minmax"
    equalize: str | None = None  # cross-layer equalization (edgeseg.quantize.equalize.MODES); None: EQUALIZE's default
    float_types: tuple[str, ...] | None = None  # aeq: op types kept float (None: exporters.tflite_aeq's default)
    min_agreement: float | None = None
    min_mask_miou: float | None = None
    max_miou_drop: float | None = None
    limit: int | None = None
    weights: str | None = None
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def validate(opts: QuantizeOptions) -> None:
    from edgeseg.core.registry import check_choice

    check_choice(opts.method, list(METHODS), "--method")
    if opts.targets is None:
        opts.targets = {"aeq": AEQ_TARGETS, "pt2e": PT2E_TARGETS}.get(opts.method, ("tflite", "onnx", "openvino"))
    epochs, lr = FINE_TUNING.get(opts.method, (2, 1e-5))
    opts.epochs = epochs if opts.epochs is None else opts.epochs
    opts.lr = lr if opts.lr is None else opts.lr
    if opts.max_float_layers is None:
        opts.max_float_layers = DEFAULT_MAX_STEPS if opts.method in ("aeq", "pt2e") else 8
    for t in opts.targets:
        check_choice(t, list(TARGETS), "--targets entry")
    if not opts.targets:
        raise UsageError("--targets is empty; name at least one of " + ", ".join(TARGETS))
    # methods whose back-end writes only some targets: what it is, what it can write, where to go for the rest
    only = {"accuracy": ("runs NNCF's accuracy control, whose backends here are ONNX and OpenVINO", ACCURACY_TARGETS,
                         "For TFLite use --method qat and/or --mixed-precision; for Core ML --method qat (W8A8)"),
            "aeq": ("runs ai-edge-quantizer, which quantizes TFLite files", AEQ_TARGETS,
                    "Use --targets tflite (Core ML/ONNX/OpenVINO: --method ptq or qat)"),
            "pt2e": ("converts the PT2E graph with litert-torch, which writes TFLite", PT2E_TARGETS,
                     "Use --targets tflite (Core ML/ONNX/OpenVINO: --method ptq or qat)")}
    if opts.method in only:
        what, allowed, hint = only[opts.method]
        bad = [t for t in opts.targets if t not in allowed]
        if bad:
            raise UsageError(f"--method {opts.method} {what}; it cannot produce {', '.join(bad)}. {hint}")
    if opts.method == "pt2e":
        if opts.epochs < 0:
            raise UsageError(f"--epochs must be 0 (post-training) or more (QAT) for --method pt2e, got {opts.epochs}")
    from exporters.tflite_aeq import RANGES, unknown_op_types

    check_choice(opts.ranges, list(RANGES), "--ranges")
    from edgeseg.quantize.equalize import MODES

    opts.equalize = EQUALIZE.get(opts.method, "off") if opts.equalize is None else opts.equalize
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
    thresholds_for("int8", opts.min_agreement, opts.min_mask_miou, opts.max_miou_drop)  # names a bad flag
