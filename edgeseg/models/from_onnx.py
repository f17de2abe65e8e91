"""An ONNX file as the source of an imported run (``edgeseg import onnx:FILE``).

Every edgeseg target starts from a PyTorch module (TFLite through ONNX/onnx2tf or litert-torch, Core ML through
``torch.jit.trace`` -- coremltools dropped its ONNX frontend in 6.0 --, OpenVINO and ONNX int8 through NNCF).
So the file is translated once into a ``torch.fx.GraphModule`` by onnx2torch (a maintained ONNX -> PyTorch
converter, op by op) and every target, ``quantize`` included, takes that module like any run's model.

The *reference* stays the user's file: ``check`` runs the original ONNX in onnxruntime (:class:`OnnxRuntimeNet`),
so an error the translation made would show as lost parity, never hide. ``import`` also measures the
translation against onnxruntime on the run's own images and refuses a translation that changes masks.

Before translating, the graph is cleaned by onnxscript's optimizer (constant folding; Identity nodes on shared
initializers, which the TorchScript exporter writes and onnx2torch cannot read) and converted to opset 17
when it is newer (onnx2torch 1.5 has no opset-18 ``Reduce*`` with axes as an input, the dynamo exporter's
default).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from edgeseg.core.errors import UsageError

#: the opset onnx2torch 1.5 translates completely for the ops segmentation models use
TRANSLATE_OPSET = 17


def _read(path: Path, sha256: str | None = None):
    import onnx

    from edgeseg.models.model_file import run_file_bytes

    data = run_file_bytes(path, sha256, "ONNX")
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError, ValidationError, ...
        raise UsageError(f"'{path}' is not a valid ONNX model: {str(e).splitlines()[0][:200]}") from None
    return model


def input_shape(path: Path) -> tuple[int | str, ...]:
    """The first graph input's dimensions (ints, or the symbolic names of dynamic ones)."""
    return _input_dims(_read(Path(path)), path)


def _input_dims(model, path: Path) -> tuple[int | str, ...]:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UsageError(f"'{path}' has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); edgeseg imports "
                         f"models with one image input")
    dims = inputs[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def translate(path: Path, sha256: str | None = None) -> nn.Module:
    """The ONNX file as a PyTorch module (onnx2torch), after cleaning and opset conversion."""
    try:
        from onnx2torch import convert
    except ImportError:
        raise UsageError("onnx: models need onnx2torch: pip install -e '.[import]'") from None
    import onnx.version_converter
    import onnxscript.optimizer

    model = _read(Path(path), sha256)
    fixed_batch = _input_dims(model, path)[0] == 1
    try:
        model = onnxscript.optimizer.optimize(model)
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=TRANSLATE_OPSET)
        if opset > TRANSLATE_OPSET:
            model = onnx.version_converter.convert_version(model, TRANSLATE_OPSET)
    except Exception as e:  # noqa: BLE001 - optimizer/adapter errors name the node
        raise UsageError(f"'{path}': preparing the graph for translation failed: {str(e).splitlines()[0][:300]}") \
            from None
    try:
        net = convert(model)
    except NotImplementedError as e:  # "Converter is not implemented (OperationDescription(... operation_type=X"
        raise UsageError(f"'{path}' uses an op onnx2torch cannot translate to PyTorch, so no target can be built "
                         f"from it: {e}") from None
    except Exception as e:  # noqa: BLE001 - onnx2torch raises KeyError/ValueError on graphs it misreads
        raise UsageError(f"'{path}': onnx2torch could not translate the graph: {type(e).__name__}: "
                         f"{str(e).splitlines()[0][:300] if str(e) else ''}") from None
    return Translated(net, fixed_batch=fixed_batch)


class Translated(nn.Module):
    """onnx2torch's module as edgeseg runs it.

    * A graph exported with a fixed batch of 1 (what a phone runs) keeps constants sized for it (Resize's
      ``sizes`` = ``[1, C, H, W]``): batches run an image at a time; a batch of one -- every export trace --
      is a plain call.
    * Under ``torch.onnx.export`` onnx2torch swaps many of its ops for ``autograd.Function``s whose symbolic
      writes the original ONNX node; with NNCF's quantizer hooks around them (``quantize``, ONNX int8) the
      TorchScript exporter fails with ``unordered_map::at``. The ops' plain PyTorch forward traces to the same
      computation, so the translation is traced like any edgeseg model.
    """

    def __init__(self, net: nn.Module, fixed_batch: bool = False) -> None:
        super().__init__()
        self.net, self.fixed_batch = net, fixed_batch

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_batch and not isinstance(x, torch.fx.Proxy) and x.shape[0] != 1:
            return torch.cat([self.net(x[i:i + 1]) for i in range(x.shape[0])])
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return self._run(x)
        exporting = torch.onnx.is_in_onnx_export
        torch.onnx.is_in_onnx_export = lambda: False  # read by onnx2torch's ops only while tracing this module
        try:
            return self._run(x)
        finally:
            torch.onnx.is_in_onnx_export = exporting


class OnnxRuntimeNet(nn.Module):
    """The original ONNX file run by onnxruntime, callable like a module (``check``'s reference).

    Not exportable or trainable: it is only ever called under ``torch.no_grad`` with CPU tensors.
    """

    def __init__(self, path: Path, sha256: str | None = None, threads: int = 2) -> None:
        super().__init__()
        import onnxruntime as ort

        _read(Path(path), sha256)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.runtime = f"onnxruntime {ort.__version__} on {Path(path).name}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)
        # one image at a time: an exported file often has a fixed batch of 1
        return torch.from_numpy(np.concatenate([self.session.run(None, {self.input: x[i:i + 1]})[0]
                                                for i in range(x.shape[0])]))
