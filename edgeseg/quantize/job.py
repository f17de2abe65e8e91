"""What ``edgeseg quantize`` hands every int8 route (:mod:`edgeseg.quantize.route`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


@dataclass
class Job:
    """What every route is handed: the run, its model (equalized when asked; ``reference`` stays the original),
    the calibration images, the labelled validation (search) and test (check) splits, the gate, the options, the
    common export options, the fields every record carries, the summary to fill, and the log."""

    run: Path
    ckpt: Any
    model: Any
    example: np.ndarray
    calib: Sequence[np.ndarray]
    val: tuple[list[np.ndarray], list[np.ndarray]]
    test: tuple[list[np.ndarray], list[np.ndarray]]
    reference: Callable[[np.ndarray], np.ndarray]
    thresholds: dict[str, float]
    opts: Any
    base_opts: Any
    extra: dict[str, Any]
    summary: dict[str, Any]
    log: Callable[[str], None]
