"""The exporter contract: what makes export targets interchangeable.

A target module provides a :class:`Target`: ``name``, file ``suffix``, the precisions it supports,
``is_available()``, ``export(model, example, options, out_dir) -> ExportResult`` and
``load(path, threads, outputs=...) -> Runner``. Every task goes through the same two functions; what differs
is named by ``ExportOptions.outputs``:

* ``("logits",)`` (a semantic model): the Runner is callable like the model, NCHW float32 (already normalized)
  in, NCHW float32 logits out; the target handles NHWC layout and int8 (de)quantization inside.
* several names (a multi-output graph such as Mask R-CNN's export graph, a module returning a tuple of tensors
  in that order, NCHW RGB input in [0, 1]): the file carries those names, the target's ``graph_precisions``
  apply, and the Runner returns ``{name: array}``.

Parity is then one function per task for every target.

This package never imports ``edgeseg``: it takes a plain ``nn.Module``, an example input,
optional calibration tensors and options.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np


class ExporterError(Exception):
    """A conversion failed or its toolchain is missing. Messages name the target and the fix."""


class ToolchainMissing(ExporterError):
    """The Python packages a target needs are not installed."""


@dataclass(frozen=True)
class Normalization:
    """Per-channel normalization the model expects: ``(pixel / 255 - mean) / std`` on RGB input."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ExportOptions:
    """Options common to all targets.

    Attributes:
        precision: one of the target's ``precisions``.
        calibration: NCHW float32 batches (normalized) for full-integer quantization.
        class_names: labels written into the model's metadata where the format has a place for them.
        normalization: the model's input normalization (CoreML encodes it in its image input).
        output: ``"logits"`` (NCHW scores) or ``"argmax"`` (an in-graph class map, NHW integers), where the
            target supports it.
        input: ``"image"`` (Core ML ``ImageType``: pixels, normalization in the model) or ``"multiarray"``
            (normalized NCHW floats), where the target has the choice.
        deployment_target: the minimum OS the artifact must run on (Core ML: ``iOS16``, ``iOS17``,
            ``iOS18``; None = the lowest the precision allows).
        metadata: free-form string metadata (author, licence, version, edgeseg manifest fields).
        work_dir: a folder where a target may cache intermediate artifacts shared between
            precisions (e.g. the TF SavedModel); created by the caller, may be None.
        quantized: the model already carries NNCF quantizers (``edgeseg quantize``): int8 targets that read
            them (ONNX QDQ, OpenVINO) convert them instead of calibrating their own.
        outputs: the names of the module's outputs, in order; more than one makes a multi-output graph (see the
            module docstring).
        description: a one-line description written into the file where the format has a place for it.
    """

    precision: str
    calibration: Sequence[np.ndarray] = ()
    class_names: tuple[str, ...] = ()
    normalization: Normalization = Normalization()
    output: str = "logits"
    input: str = "image"
    deployment_target: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    work_dir: Path | None = None
    quantized: bool = False
    outputs: tuple[str, ...] = ("logits",)
    description: str = ""

    @property
    def graph(self) -> bool:
        """A multi-output graph rather than a logits model."""
        return len(self.outputs) > 1

    def replace(self, **changes: Any) -> "ExportOptions":
        return dataclasses.replace(self, **changes)


@dataclass
class ExportResult:
    """What an export wrote and how long it took."""

    target: str
    precision: str
    path: Path
    size_bytes: int
    seconds: float
    input_shape: tuple[int, ...]
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        d["input_shape"] = list(self.input_shape)
        return d


class Runner(Protocol):
    """A loaded exported model: NCHW float32 normalized input -> NCHW float32 logits (a one-output model), or
    ``{output name: array}`` (a multi-output graph, loaded with its ``outputs`` names)."""

    runtime: str

    def __call__(self, x: np.ndarray) -> np.ndarray | dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Target:
    """One export target. ``export`` and ``load`` are plain functions of the target's module."""

    name: str
    suffix: str
    precisions: tuple[str, ...]
    default_precision: str
    requires: tuple[str, ...]
    export: Callable[[Any, np.ndarray, ExportOptions, Path], ExportResult]
    load: Callable[..., Runner]
    can_run: Callable[[], tuple[bool, str]]
    extra: str = ""
    graph_precisions: tuple[str, ...] = ()  # the precisions of a multi-output graph (empty: none)
    graph_refusal: str = ""  # why a multi-output graph has none, where that was measured

    def is_available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.requires)

    def require(self) -> None:
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise ToolchainMissing(
                f"target '{self.name}' needs {', '.join(missing)}; install it with "
                f"pip install 'edgeseg[{self.extra or self.name}]'"
            )


def check_precision(target: Target, options: ExportOptions) -> None:
    """Refuse a precision the target has not for this kind of model (logits model or multi-output graph)."""
    allowed = target.graph_precisions if options.graph else target.precisions
    if options.precision not in allowed:
        kind = "a multi-output graph" if options.graph else "this model"
        raise ExporterError(f"target '{target.name}' has no precision '{options.precision}' for {kind} "
                            f"({', '.join(allowed) or 'none'})")


def path_size(path: Path) -> int:
    """Size in bytes of a file, or of every file below a directory (``.mlpackage``)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def iter_batches(items: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """NCHW batches as single-image NCHW arrays, one at a time (a lazy ``items`` stays lazy)."""
    for b in items:
        b = np.asarray(b, dtype=np.float32)
        yield from (b[i : i + 1] for i in range(b.shape[0]))


def batches(items: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Split NCHW batches into single-image NCHW arrays (converters calibrate one sample at a time)."""
    return list(iter_batches(items))


def class_map(model, dtype: str):
    """``model`` (NCHW logits out) followed by an argmax over classes cast to ``dtype`` (``"uint8"``, ``"int32"``):
    the [N, H, W] class map an app reads, in the graph (``--output argmax``)."""
    import torch

    out_type = getattr(torch, dtype)

    class ClassMap(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x).argmax(dim=1).to(out_type)

    return ClassMap(model).eval()
