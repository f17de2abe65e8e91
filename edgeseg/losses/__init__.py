"""Segmentation losses, registered by name, composable as weighted sums with start epochs.

Every loss is called as ``loss(logits, target, dist=None)``: logits ``[N, C, H, W]``, target ``[N, H, W]``
class indices (``IGNORE_INDEX`` pixels contribute nothing), and for distance-based losses the signed
distance maps ``[N, C, H, W]`` computed once per sample in the data pipeline
(:func:`edgeseg.losses.distance.signed_distance_maps`).

A loss spec is a sum of terms ``[weight*]name[(key=value, ...)][@epoch][~ramp]``, e.g.
``"ce + 0.5*dice(smooth=1)"``, ``"ce + lovasz@10"`` (Lovász-Softmax from epoch 10 on) or
``"dice + boundary~0.01"`` (boundary weight 0.01, 0.02, ... per epoch up to 1, as Kervadec et al.).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from edgeseg.core.errors import UsageError
from edgeseg.core.registry import Registry

LOSSES: Registry[Callable[..., "torch.nn.Module"]] = Registry("loss")


_TERM = re.compile(r"^\s*(?:(?P<w>[0-9.eE+-]+)\s*\*\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                   r"\s*(?:\((?P<args>[^)]*)\))?\s*(?:@\s*(?P<epoch>\d+))?\s*(?:~\s*(?P<ramp>[0-9.eE-]+))?\s*$")


@dataclass
class Term:
    """``weight * loss`` from ``start_epoch`` on; with ``ramp`` the weight grows linearly by ``ramp`` per
    epoch up to ``weight`` (Kervadec et al.'s schedule for the boundary loss)."""

    weight: float
    name: str
    loss: torch.nn.Module
    start_epoch: int = 0
    ramp: float | None = None

    def weight_at(self, epoch: int) -> float:
        if epoch < self.start_epoch:
            return 0.0
        if self.ramp is None:
            return self.weight
        return min(self.weight, self.ramp * (epoch - self.start_epoch + 1))


@dataclass
class CompositeLoss:
    """A weighted sum of losses; terms with a start epoch join when training reaches it."""

    terms: list[Term] = field(default_factory=list)
    spec: str = ""

    @property
    def needs_distance_maps(self) -> bool:
        return any(getattr(t.loss, "needs_distance_maps", False) for t in self.terms)

    @property
    def reads_outputs(self) -> set[str]:
        """Model outputs other than the logits that some term reads (e.g. Gated-SCNN's ``edge``)."""
        return {k for t in self.terms for k in getattr(t.loss, "reads_outputs", ())}

    def __call__(self, outputs: torch.Tensor | dict, target: torch.Tensor, dist: torch.Tensor | None = None,
                 epoch: int = 0) -> torch.Tensor:
        """``outputs`` is the logits, or a model's training dict ``{"out": logits, ...}``; terms that
        declare ``reads_outputs`` get the dict, the others the logits."""
        logits = outputs["out"] if isinstance(outputs, dict) else outputs
        total = logits.new_zeros((), dtype=torch.float32)
        for t in self.terms:
            w = t.weight_at(epoch)
            if w > 0:
                arg = outputs if getattr(t.loss, "reads_outputs", ()) else logits
                total = total + w * t.loss(arg, target, dist)
        return total


def _value(text: str) -> Any:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.startswith("[") and text.endswith("]"):
        return [_value(v) for v in text[1:-1].split(";") if v.strip()]
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def parse_loss(spec: str, num_classes: int, class_weights: list[float] | None = None) -> CompositeLoss:
    """Build a :class:`CompositeLoss` from a spec string; clear UsageError naming what is wrong.

    Lists inside arguments use ``;`` (``focal(alpha=[0.25;1;1])``). ``class_weights`` (from the
    training config's ``class_weights``) go to losses that take per-class weights and were not given any.
    """
    import inspect

    out = CompositeLoss(spec=spec)
    for raw in spec.split("+"):
        m = _TERM.match(raw)
        if not m:
            raise UsageError(f"--loss '{spec}': cannot read term '{raw.strip()}'; write e.g. 'ce + 0.5*dice(smooth=1)@5'")
        name = m["name"]
        builder = LOSSES.get(name)
        kwargs: dict[str, Any] = {}
        for part in (m["args"] or "").split(","):
            if not part.strip():
                continue
            k, sep, v = part.partition("=")
            if not sep:
                raise UsageError(f"--loss '{spec}': argument '{part.strip()}' of '{name}' must be key=value")
            kwargs[k.strip()] = _value(v)
        params = inspect.signature(builder).parameters
        for k in kwargs:
            if k not in params or k == "num_classes":
                from edgeseg.core.registry import suggest

                raise UsageError(f"--loss: '{name}' has no parameter '{k}'"
                                 f"{suggest(k, [p for p in params if p != 'num_classes'])}")
        if "weight" in params and "weight" not in kwargs and class_weights is not None:
            kwargs["weight"] = class_weights
        try:
            weight = float(m["w"]) if m["w"] else 1.0
        except ValueError:
            raise UsageError(f"--loss '{spec}': weight '{m['w']}' is not a number") from None
        if weight < 0:
            raise UsageError(f"--loss '{spec}': term weight {weight} of '{name}' must be >= 0")
        loss = builder(num_classes=num_classes, **kwargs)
        try:
            ramp = float(m["ramp"]) if m["ramp"] else None
        except ValueError:
            raise UsageError(f"--loss '{spec}': ramp '{m['ramp']}' of '{name}' is not a number") from None
        if ramp is not None and ramp <= 0:
            raise UsageError(f"--loss '{spec}': ramp of '{name}' must be > 0, got {ramp}")
        out.terms.append(Term(weight, name, loss, int(m["epoch"] or 0), ramp))
    if not out.terms:
        raise UsageError("--loss is empty; e.g. --loss ce")
    return out


def check_class_weights(weight: Any, num_classes: int, name: str) -> torch.Tensor | None:
    """Validate a per-class weight list: one non-negative number per class."""
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=torch.float32).flatten()
    if w.numel() != num_classes:
        raise UsageError(f"loss '{name}': weight has {w.numel()} values but there are {num_classes} classes")
    if (w < 0).any():
        raise UsageError(f"loss '{name}': weights must be >= 0, got {w.tolist()}")
    return w


# Importing the families registers them (at the end: they use the helpers above).
from edgeseg.losses import boundary as _boundary  # noqa: E402,F401
from edgeseg.losses import distribution as _distribution  # noqa: E402,F401
from edgeseg.losses import dual_task as _dual_task  # noqa: E402,F401
from edgeseg.losses import region as _region  # noqa: E402,F401
