"""What ``edgeseg quantize`` can be asked (:class:`QuantizeOptions`) and the limits every route shares; the
validation that turns a bad combination into one usage error naming the flag is
:func:`edgeseg.quantize.route.validate` (it knows what each route can do)."""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_CALIBRATION = 16
WARN_CALIBRATION = 100
DEFAULT_MAX_STEPS = 40  # aeq/pt2e mixed precision: float ops (tensors) one search order may keep


@dataclass
class QuantizeOptions:
    method: str
    targets: tuple[str, ...] | None = None  # None: the route's default targets
    calibration: int = 300
    preset: str = "performance"
    ignored: tuple[str, ...] = ()
    fast_bias_correction: bool = True
    epochs: int | None = None  # None: the route's measured default (Route.fine_tuning)
    lr: float | None = None
    distill: float = 1.0
    task_weight: float = 0.0
    max_drop: float = 0.01
    mixed_precision: bool = False
    max_float_layers: int | None = None  # None: 8 for the debugger search, 40 for aeq's
    max_float_macs: float = 10.0
    ranges: str = "minmax"
    equalize: str | None = None  # cross-layer equalization (edgeseg.quantize.equalize.MODES); None: the route's
    float_types: tuple[str, ...] | None = None  # aeq: op types kept float (None: exporters.tflite_aeq's default)
    min_agreement: float | None = None
    min_mask_miou: float | None = None
    max_miou_drop: float | None = None
    max_class_drop: float | None = None
    limit: int | None = None
    weights: str | None = None
    seed: int = 0
    notes: list[str] = field(default_factory=list)
