"""The self-describing checkpoint: weights + config + preprocessing + classes + metrics + versions.

Written atomically (temp file, then rename) and read only with ``torch.load(weights_only=True)``:
everything in it is tensors and plain Python values, so a checkpoint can never run code.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from edgeseg.core.atomic import atomic_path
from edgeseg.train.config import TrainConfig
from edgeseg.data.base import ClassInfo
from edgeseg.data.transforms import Preprocess
from edgeseg.core.errors import CheckpointError, EdgesegError
from edgeseg.core.versions import package_versions

FORMAT = "edgeseg-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``state`` holds the optional training state (optimizer, ...).

    ``weights`` are the trained (raw) weights; ``ema_weights`` their exponential moving average when the
    run used ``--ema``. Export, check and report use ``config.export_weights`` of the two unless told.
    """

    config: TrainConfig
    preprocess: Preprocess
    classes: list[ClassInfo]
    weights: dict[str, torch.Tensor]
    ema_weights: dict[str, torch.Tensor] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def weights_choice(self, which: str | None = None) -> str:
        """``ema`` or ``raw``: the asked-for set, or the run's ``export_weights`` when EMA weights exist."""
        if which in (None, "auto"):
            return self.config.export_weights if self.ema_weights is not None else "raw"
        if which not in ("ema", "raw"):
            raise CheckpointError(f"--weights must be ema, raw or auto, not '{which}'")
        if which == "ema" and self.ema_weights is None:
            raise CheckpointError(f"checkpoint '{self.path}' has no EMA weights (trained without --ema); use "
                                  f"--weights raw")
        return which

    def build_model(self, which: str | None = None) -> nn.Module:
        """Rebuild the architecture and load the (EMA or raw, see :meth:`weights_choice`) weights, eval, CPU."""
        from edgeseg.models import build_model
        from edgeseg.models.imported import IMPORTED, build_imported

        if self.config.model == IMPORTED:  # edgeseg import: the source rebuilds the architecture
            base = Path(self.path).parent if self.path is not None else None
            model = build_imported(self.num_classes, base=base, **self.config.model_kwargs)
        else:
            model = build_model(self.config.model, self.num_classes, **self.config.model_kwargs)
        weights = self.ema_weights if self.weights_choice(which) == "ema" else self.weights
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise CheckpointError(
                f"checkpoint '{self.path}' does not fit model '{self.config.model}' with "
                f"{self.num_classes} classes: {first}"
            ) from None
        return model.eval()

    def reference_model(self, which: str | None = None) -> tuple[nn.Module, str]:
        """What exports are checked against, and its name: the PyTorch model, except for a run imported from
        ONNX, whose reference is the original file in onnxruntime (the PyTorch translation is only the
        exporters' input)."""
        from edgeseg.models.imported import IMPORTED, reference_imported

        if self.config.model == IMPORTED:
            base = Path(self.path).parent if self.path is not None else None
            ref = reference_imported(base=base, **self.config.model_kwargs)
            if ref is not None:
                return ref, ref.net.runtime
        return self.build_model(which), "PyTorch"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_json(),
            "preprocess": self.preprocess.to_json(),
            "classes": [c.to_json() for c in self.classes],
            "weights": self.weights,
            "ema_weights": self.ema_weights,
            "metrics": self.metrics,
            "versions": self.versions or package_versions(),
            "state": self.state,
        }


def save_checkpoint(ckpt: Checkpoint, path: Path) -> Path:
    with atomic_path(Path(path)) as tmp:
        torch.save(ckpt.to_dict(), tmp)
    return Path(path)


def resolve_checkpoint(run: Path | str) -> Path:
    """A run directory or a checkpoint file -> the checkpoint file."""
    p = Path(run)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.exists():
        raise CheckpointError(f"no checkpoint at '{p}'; pass a run directory made by 'edgeseg train' or a .pt file")
    return p


def load_checkpoint(run: Path | str) -> Checkpoint:
    """Load a checkpoint safely; clear CheckpointError for anything that is not an edgeseg checkpoint."""
    path = resolve_checkpoint(run)
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since PyTorch 1.6
        raise CheckpointError(f"checkpoint '{path}' is corrupt or not a PyTorch file (not a torch.save archive)")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint '{path}' was refused by the safe loader (weights_only=True): it holds objects that "
            f"could run code ({str(e).splitlines()[0][:200]}); only load checkpoints from sources you trust, "
            f"re-saved as plain tensors"
        ) from None
    except Exception as e:  # noqa: BLE001 - a damaged archive makes the weights-only unpickler raise anything
        # (measured by the fuzz test: AttributeError on an overwritten storage record, besides RuntimeError & co)
        raise CheckpointError(f"checkpoint '{path}' is corrupt or not a PyTorch file ({type(e).__name__}: "
                              f"{str(e)[:200]})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not an edgeseg checkpoint (no '{FORMAT}' header)")
    if d.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' has format version {d['format_version']}, newer than this edgeseg "
            f"({FORMAT_VERSION}); upgrade edgeseg"
        )
    try:
        return Checkpoint(
            # runs written before the resize option was stretched to the square
            config=TrainConfig.from_dict({"resize": "stretch", **d["config"]}, source=str(path)),
            preprocess=Preprocess.from_json(d["preprocess"]),
            classes=[ClassInfo.from_json(c) for c in d["classes"]],
            weights=d["weights"],
            ema_weights=d.get("ema_weights"),
            metrics=d.get("metrics", {}),
            versions=d.get("versions", {}),
            state=d.get("state", {}),
            path=path,
        )
    except EdgesegError as e:
        raise CheckpointError(f"checkpoint '{path}' is damaged: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint '{path}' is damaged: missing or bad field {e}") from None
