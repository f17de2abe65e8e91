"""Model input sizes as users write them (``256``, ``360x480``) and the resize rules a frame can take."""

from __future__ import annotations

from typing import Any

from edgeseg.core.errors import UsageError

RESIZE_MODES = ("letterbox", "stretch", "crop")


def parse_image_size(value: Any, name: str = "--image-size") -> tuple[int, int]:
    """``128``, ``"128"``, ``"360x480"`` (height x width) or ``[360, 480]`` -> ``(height, width)``."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    if isinstance(value, str):
        parts = value.lower().replace(" ", "").split("x")
        if len(parts) in (1, 2) and all(p.isdigit() for p in parts):
            h, w = int(parts[0]), int(parts[-1])
            return h, w
    raise UsageError(f"{name} must be a side such as 256 or HEIGHTxWIDTH such as 360x480 (height first, as in "
                     f"tensor shapes), got {value!r}")
