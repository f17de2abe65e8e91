"""Frozen configuration dataclasses; dictionaries (or YAML) in, unknown keys rejected."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.core.errors import UsageError
from edgeseg.core.image_size import RESIZE_MODES, parse_image_size
from edgeseg.core.registry import suggest


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    Attributes:
        model: registered architecture name (``edgeseg models``).
        model_kwargs: architecture options (e.g. ``{"base": 16}`` for U-Net).
        data: dataset spec (``synthetic`` or ``folder:PATH?...``).
        image_size: the model's input size: an int (square side) or ``"HxW"`` (e.g. ``"360x480"``, height
            first as in tensor shapes); stored as an int when square.
        resize: how a frame of another size becomes ``image_size``: ``letterbox`` (scale to fit, keep the
            aspect ratio, pad with black; padding ignored in loss and metrics), ``stretch`` (scale each side),
            or ``crop`` (scale to cover, centre crop). Recorded in the checkpoint and the bundle.
        epochs, batch_size, lr, weight_decay: the usual.
        warmup_epochs: linear warm-up length (fraction of an epoch allowed) before the schedule.
        schedule: ``cosine`` or ``poly`` (power 0.9) decay to zero after warm-up.
        class_weights: ``none``, ``inverse`` (1/frequency) or ``median`` (median-frequency balancing),
            computed once from the training masks; given to every loss term that takes ``weight``.
        augment: training augmentation (``edgeseg.data.augment``): ``flip`` (default), ``none``,
            ``standard`` (scale 0.5-2 + crop + flip + colour jitter) or ``scale=LO-HI,flip=P,jitter=J``.
        loss: a loss spec (``edgeseg.losses``), e.g. ``"ce + 0.5*dice"`` or ``"ce + lovasz@10"``.
        bn_momentum: BatchNorm momentum used while training (torchvision's MobileNetV3 uses 0.01,
            far too slow for short runs); None keeps the architecture's value.
        precise_bn_batches: training batches used to re-estimate BatchNorm statistics at the end
            (cumulative average, no gradient), so eval-mode masks are right after short runs.
        seed: seeds weights init, data order and augmentation.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda[:N]``.
        num_workers: DataLoader workers; None = 0 on CPU, 4 on CUDA.
        amp: mixed precision on CUDA; never on CPU.
        amp_dtype: ``auto`` (bf16 where the GPU supports it, else fp16), ``bf16`` or ``fp16`` (with a grad scaler).
        accumulate: micro-batches per optimizer step (effective batch = batch_size x accumulate).
        clip_grad: clip the gradient norm to this value before each optimizer step (None = off).
        ema: decay of an exponential moving average of the weights (e.g. 0.999; 0 = off).
        export_weights: ``ema`` or ``raw``: which weights validation, export and check use when EMA is on.
        sync_bn: SyncBatchNorm across processes (CUDA only).
        compile: ``torch.compile`` the model for training.
        patience: stop after this many epochs without a better val mIoU (None = never).
        checkpoint_every: also write the checkpoint every N optimizer steps (0 = only at epoch ends).
    """

    model: str = "lraspp"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: str = "synthetic"
    image_size: int | str = 128
    resize: str = "letterbox"
    epochs: int = 12
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    class_weights: str = "none"
    loss: str = "ce"
    augment: str = "flip"
    bn_momentum: float | None = 0.1
    precise_bn_batches: int = 25
    seed: int = 0
    device: str = "auto"
    num_workers: int | None = None
    amp: bool = True
    amp_dtype: str = "auto"
    accumulate: int = 1
    clip_grad: float | None = None
    ema: float = 0.0
    export_weights: str = "ema"
    sync_bn: bool = False
    compile: bool = False
    patience: int | None = None
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        h, w = parse_image_size(self.image_size, "image_size")
        object.__setattr__(self, "image_size", h if h == w else f"{h}x{w}")
        checks = [
            (min(h, w) >= 16, "image_size", "must be at least 16 (each model also checks its own divisor)"),
            (self.resize in RESIZE_MODES, "resize", f"must be one of {', '.join(RESIZE_MODES)}"),
            (self.epochs >= 1, "epochs", "must be at least 1"),
            (self.batch_size >= 1, "batch_size", "must be at least 1"),
            (self.lr > 0, "lr", "must be positive"),
            (self.schedule in ("cosine", "poly"), "schedule", "must be 'cosine' or 'poly'"),
            (self.class_weights in ("none", "inverse", "median"), "class_weights",
             "must be 'none', 'inverse' or 'median'"),
            (self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0"),
            (self.amp_dtype in ("auto", "bf16", "fp16"), "amp_dtype", "must be 'auto', 'bf16' or 'fp16'"),
            (self.accumulate >= 1, "accumulate", "must be at least 1"),
            (self.clip_grad is None or self.clip_grad > 0, "clip_grad", "must be > 0"),
            (0 <= self.ema < 1, "ema", "must be in [0, 1) (a decay such as 0.999; 0 = off)"),
            (self.export_weights in ("ema", "raw"), "export_weights", "must be 'ema' or 'raw'"),
            (self.patience is None or self.patience >= 1, "patience", "must be at least 1"),
            (self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0"),
        ]
        for ok, name, msg in checks:
            if not ok:
                raise UsageError(f"{name}={getattr(self, name)!r} {msg}")
        from edgeseg.data.augment import AugmentSpec

        AugmentSpec.parse(self.augment)

    @property
    def height(self) -> int:
        return parse_image_size(self.image_size)[0]

    @property
    def width(self) -> int:
        return parse_image_size(self.image_size)[1]

    #: fields a resumed run may change: they do not change the trained weights
    RESUME_FREE = ("device", "num_workers", "checkpoint_every")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any], source: str = "config") -> "TrainConfig":
        fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
        for k, v in d.items():
            if k not in fields:
                raise UsageError(f"{source}: unknown key '{k}'{suggest(str(k), list(fields))}")
            _check_type(k, v, fields[k].type, source)
        try:
            return TrainConfig(**d)
        except UsageError as e:
            raise UsageError(f"{source}: {e}") from None

    @staticmethod
    def from_yaml(path: Path) -> "TrainConfig":
        return TrainConfig.from_dict(read_yaml_mapping(path, "config file"), source=f"config file '{path}'")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _check_type(key: str, value: Any, annotation: Any, source: str) -> None:
    """A config value of the field's declared type (``int | None`` allows None; a bool is not a number)."""
    text = str(annotation)
    if value is None:
        if "None" in text:
            return
        raise UsageError(f"{source}: '{key}' needs a value ({text}), got nothing")
    if text.startswith("dict"):
        if not isinstance(value, dict):
            raise UsageError(f"{source}: '{key}' must be a mapping, got {type(value).__name__}")
        return
    if key == "image_size":
        parse_image_size(value, f"{source}: 'image_size'")
        return
    base = text.split("|")[0].strip()
    allowed = _TYPES.get(base)
    if allowed is None:
        return
    if (isinstance(value, bool) and base != "bool") or not isinstance(value, allowed):
        raise UsageError(f"{source}: '{key}' must be {'a number' if base in ('int', 'float') else 'a ' + base}, "
                         f"got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{source}: '{key}' must be finite, got {value!r}")


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping, read safely; UsageError naming ``what`` and the file otherwise."""
    import yaml

    try:
        d = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UsageError(f"{what} '{path}' does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} '{path}' is a directory, not a YAML file") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} '{path}' is not UTF-8 text (byte {e.start}); is it the right file?") from None
    except RecursionError:
        raise UsageError(f"{what} '{path}' nests too deeply to be a configuration") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{what} '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise UsageError(f"{what} '{path}' must hold a mapping of keys to values")
    bad = [k for k in d if not isinstance(k, str)]
    if bad:
        raise UsageError(f"{what} '{path}': keys must be names, got {bad[0]!r}")
    return d
