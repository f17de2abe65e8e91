"""Models that edgeseg did not train: torchvision's segmentation models and any ``nn.Module`` factory.

An imported run stores ``model = "imported"`` and, in ``model_kwargs``, the source that rebuilds the
architecture (the weights are in the checkpoint like any run's):

* ``{"source": "torchvision", "name": "lraspp_mobilenet_v3_large", "aux": false}``: torchvision's
  ``torchvision.models.segmentation.<name>``; its ``{"out", "aux"}`` dict output becomes the ``out`` tensor.
* ``{"source": "smp", "arch": "Unet", "encoder": "mobilenet_v2", "options": {...}}``:
  segmentation_models_pytorch's ``create_model`` (encoder weights from the checkpoint, never downloaded).
* ``{"source": "python", "factory": "package.module:function", "kwargs": {...}}``: any importable factory
  that returns an ``nn.Module`` (the module must be importable wherever the run is exported or checked).
* ``{"source": "torchscript", "file": "model.torchscript.pt", "sha256": ...}``: a TorchScript archive copied
  into the run directory (the graph lives there; a changed file is refused).
* ``{"source": "onnx", "file": "model.source.onnx", "sha256": ...}``: an ONNX file copied into the run,
  translated to PyTorch by onnx2torch for the targets; ``check``'s reference runs the file itself in
  onnxruntime (:func:`reference_imported`, :mod:`edgeseg.models.from_onnx`).

``binary: true`` marks a model with one sigmoid-logit channel: it becomes two class logits ``[0, z]``,
whose argmax is ``z > 0`` = ``sigmoid(z) > 0.5``. ``upsample: true`` resizes outputs smaller than the
input (bilinear) in the graph. Every wrapper keeps the export contract: one NCHW float tensor in, one
``[N, classes, H, W]`` logits tensor out.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.core.errors import UsageError
from edgeseg.core.registry import suggest
from edgeseg.models.model_file import run_file_bytes

IMPORTED = "imported"


def torchvision_names() -> list[str]:
    """torchvision's segmentation builders (``torchvision.models.list_models``)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm.segmentation))


class Imported(nn.Module):
    """The wrapper every imported model runs in: dict outputs, binary logits and upsampling handled."""

    def __init__(self, net: nn.Module, binary: bool = False, upsample: bool = False) -> None:
        super().__init__()
        self.net, self.binary, self.upsample = net, bool(binary), bool(upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a TorchScript module's method is called directly: called as a module under torch.jit.trace (ONNX and
        # Core ML export) it is refused as "not part of the active trace"
        y = self.net.forward(x) if isinstance(self.net, torch.jit.ScriptModule) else self.net(x)
        if isinstance(y, dict):
            y = y["out"]
        elif isinstance(y, (tuple, list)):
            y = y[0]
        if self.upsample and tuple(y.shape[-2:]) != tuple(x.shape[-2:]):
            y = F.interpolate(y, size=(int(x.shape[-2]), int(x.shape[-1])), mode="bilinear", align_corners=False)
        if self.binary:
            # [0, z] as a 1x1 convolution with weights (0, 1), exact for finite logits: onnx2tf 2.6 turns one-channel
            # tensors into RESHAPEs and concatenated zeros_like's [0, z] on the wrong axis (a [1,2,48,80] output for
            # NHWC [1,48,80,2]); a convolution keeps its layout in every converter
            y = F.conv2d(y, torch.tensor([0.0, 1.0], dtype=y.dtype, device=y.device).view(2, 1, 1, 1))
        return y


def _torchvision(name: str, num_classes: int, aux: bool = False) -> nn.Module:
    import torchvision.models as tvm

    names = torchvision_names()
    if name not in names:
        raise UsageError(f"torchvision has no segmentation model '{name}'{suggest(name, names)}; "
                         f"its segmentation models: {', '.join(names)}")
    # weights are loaded by the importer (or from the checkpoint), never downloaded here
    return tvm.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)


def _smp(arch: str, encoder: str, num_classes: int, options: dict[str, Any] | None = None) -> nn.Module:
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise UsageError("smp: models need segmentation_models_pytorch: pip install -e '.[import]'") from None
    archs = sorted(a.__name__ for a in smp.__dict__.values() if isinstance(a, type) and issubclass(a, nn.Module)
                   and hasattr(a, "__module__") and a.__module__.startswith("segmentation_models_pytorch.decoders"))
    if arch.lower() not in {a.lower() for a in archs}:
        raise UsageError(f"smp has no architecture '{arch}'{suggest(arch, archs)}; it has {', '.join(archs)}")
    try:
        return smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=num_classes,
                                **(options or {}))
    except (KeyError, ValueError, TypeError) as e:
        msg = str(e).splitlines()[0][:300]
        raise UsageError(f"smp:{arch}?encoder={encoder} {options or ''}: {msg}") from None


def _python(factory: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    mod_name, sep, fn_name = factory.partition(":")
    if not sep or not mod_name or not fn_name:
        raise UsageError(f"python:{factory}: give the factory as package.module:function")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise UsageError(f"python:{factory}: cannot import '{mod_name}' ({e}); is it on PYTHONPATH?") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise UsageError(f"python:{factory}: '{mod_name}' has no callable '{fn_name}'")
    try:
        net = fn(**(kwargs or {}))
    except TypeError as e:
        raise UsageError(f"python:{factory}: calling it with {kwargs or {}} failed: {e}") from None
    if not isinstance(net, nn.Module):
        raise UsageError(f"python:{factory} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def _torchscript(path: Path, sha256: str | None = None) -> nn.Module:
    from edgeseg.core.errors import CheckpointError

    run_file_bytes(path, sha256, "TorchScript")
    try:
        # TorchScript's own archive loader (code + tensors), not pickle: the user's model file
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"'{path}' is not a TorchScript archive ({str(e).splitlines()[0][:200]})") from None


def build_imported(num_classes: int, source: str, binary: bool = False, upsample: bool = False,
                   base: Path | None = None, **kw: Any) -> nn.Module:
    """The architecture of an imported run, untrained (weights come from the checkpoint); ``base`` is the run
    directory (where a TorchScript source keeps its file)."""
    if source == "torchvision":
        net = _torchvision(kw["name"], 1 if binary else num_classes, kw.get("aux", False))
    elif source == "smp":
        net = _smp(kw["arch"], kw["encoder"], 1 if binary else num_classes, kw.get("options"))
    elif source == "python":
        net = _python(kw["factory"], kw.get("kwargs"))
    elif source == "torchscript":
        net = _torchscript(Path(base or ".") / kw["file"], kw.get("sha256"))
    elif source == "onnx":
        from edgeseg.models.from_onnx import translate

        net = translate(Path(base or ".") / kw["file"], kw.get("sha256"))
    else:
        raise UsageError(f"unknown import source '{source}'; sources: torchvision, smp, python, torchscript, onnx")
    return Imported(net, binary=binary, upsample=upsample)


def reference_imported(source: str, binary: bool = False, upsample: bool = False, base: Path | None = None,
                       **kw: Any) -> nn.Module | None:
    """What ``check`` compares exports with when it is not the PyTorch model: for an ONNX source, the original
    file in onnxruntime (wrapped like the translation, so binary/upsample apply the same). None otherwise."""
    if source != "onnx":
        return None
    from edgeseg.models.from_onnx import OnnxRuntimeNet

    return Imported(OnnxRuntimeNet(Path(base or ".") / kw["file"], kw.get("sha256")), binary=binary,
                    upsample=upsample).eval()
