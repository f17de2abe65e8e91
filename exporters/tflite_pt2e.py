"""int8 TFLite whose quantization grid is the one PyTorch trained with: PT2E (``torch.export``) quantization with
LiteRT's own quantizer (litert-torch's ``PT2EQuantizer``), converted by litert-torch.

Why: the other int8 routes re-derive their grid in the converter (TF Lite converter, ai-edge-quantizer) from the
float weights, so weights fine-tuned against NNCF's fake quantization do not keep their benefit in the file
(issue 18: NNCF QAT 98.59 % in PyTorch, 97.78 % once the converter re-quantized it). Here the fake-quantized
model *is* the file: ``convert_pt2e`` writes the trained scales and zero points as quantize/dequantize nodes and
litert-torch lowers each ``dequantize -> op -> quantize`` into the int8 op with exactly those parameters.

The graph:

* ``NHWC`` wraps the model: input ``[N, H, W, 3]`` and output ``[N, H, W, C]``, like the onnx2tf route
  (:mod:`exporters.tflite`), so camera code, MediaPipe and :class:`exporters.tflite.TFLiteRunner` take it as they
  take every other TFLite export; litert-torch cancels the transposes into the first/last ops.
* ``torch.export`` in eval mode, BatchNorm folded into the convolutions before quantization (the folded
  weights are what int8 stores, so that is what fine-tuning adapts). litert-torch 0.10's conv-BN QAT annotators
  cannot be used under torch 2.14 (their pattern capture calls ``torch.export`` on a function and fails) and have
  nothing to match once BN is folded, so they are switched off.
* weights int8 symmetric per output channel, activations int8 per tensor (asymmetric), as LiteRT's kernels take
  them. ``qat``: fake quantization (``FakeQuantize``) with moving-average ranges, initialized on
  the calibration images; :func:`freeze_ranges` stops the range updates. PTQ (``qat=False``): histogram ranges
  from the calibration images.
* Ops the quantizer does not annotate (hard-swish, hard-sigmoid's multiply, resize) compute on dequantized values
  in PyTorch; the converter turns ``dequantize -> op -> quantize`` into the int8 op where LiteRT has one, which
  is numerically the same computation up to the op's own int8 rounding (measured below the 0.1-point budget).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from exporters.native import preload_triton, quiet_native
from exporters.base import ExporterError, batches


def nhwc(model):
    """``model`` (NCHW in, logits or ``{"out": logits}`` out) as an NHWC-in, NHWC-out module; an output that is not
    4-D (an in-graph class map [N, H, W]) is left as it is."""
    import torch

    class NHWC(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            y = self.inner(x.permute(0, 3, 1, 2))
            if isinstance(y, dict):
                y = y["out"]
            return y.permute(0, 2, 3, 1) if y.dim() == 4 else y

    return NHWC(model)


def nchw_view(graph):
    """A prepared or converted PT2E graph (NHWC) as a module with edgeseg's calling convention: NCHW float input,
    NCHW logits. ``train()``/``eval()`` only set the wrapper's flag: an exported graph's mode is fixed when it is
    captured (here: eval, BN folded), and its fake quantizers do not depend on it."""
    import torch

    class NCHWView(torch.nn.Module):
        def __init__(self, g) -> None:
            super().__init__()
            self.graph = g

        def forward(self, x):
            return self.graph(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

        def train(self, mode: bool = True):
            self.training = mode
            return self

    return NCHWView(graph)


def _quantizer(qat: bool):
    preload_triton()
    import dataclasses

    from litert_torch.quantize import pt2e_quantizer as pq
    from torchao.quantization.pt2e.fake_quantize import FakeQuantize
    from torchao.quantization.pt2e.observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver

    config = pq.get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
    if qat:
        # LiteRT's QAT config uses FusedMovingAvgObsFakeQuantize, whose fused kernel derives its own scales from the
        # running ranges (measured: 90 of 183 quantizers of LR-ASPP with scales ~1 % off, weights on a 256-level
        # grid where the file has 255), so the model trained was not the model converted: 99.0 % argmax
        # agreement between the two before any training. FakeQuantize quantizes with the scales convert_pt2e
        # writes (its observer's calculate_qparams), so what QAT trains is what the file computes.
        act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=FakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, eps=2**-12))
        weight = dataclasses.replace(config.weight, observer_or_fake_quant_ctr=FakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver, eps=2**-12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act, weight=weight)
    q = pq.PT2EQuantizer().set_global(config)
    q.STATIC_QAT_ONLY_OPS = []  # BN is folded before annotation (see the module docstring)
    return q


def prepare(model, example: np.ndarray, calibration: Sequence[np.ndarray], qat: bool = True,
            progress: Callable[[], None] | None = None):
    """Capture ``model`` (NCHW, eval) with ``torch.export``, fold BN, insert LiteRT's int8 quantizers and set their
    ranges on ``calibration`` (NCHW float batches). Returns ``(prepared graph, quantizer)``; the graph takes NHWC
    input of any batch size (wrap it in :func:`nchw_view` to train it like the float model)."""
    import torch

    preload_triton()
    from torchao.quantization.pt2e import quantize_pt2e
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    _, c, h, w = np.asarray(example).shape
    wrapped = nhwc(model.eval().cpu()).eval()
    # a batch of 2 keeps the batch dimension symbolic (an example of 1 specializes it)
    x = torch.zeros(2, h, w, c)
    with quiet_native() as log:
        try:
            graph = torch.export.export(wrapped, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1,
                                                                                              max=1024)},)).module()
            _fuse_conv_bn_(graph)
            q = _quantizer(qat)
            graph = (quantize_pt2e.prepare_qat_pt2e if qat else quantize_pt2e.prepare_pt2e)(graph, q)
        except Exception as e:  # noqa: BLE001 - torch.export / annotation raise many types
            raise ExporterError(f"PT2E quantization could not capture the model: {type(e).__name__}: "
                                f"{str(e)[:600]}\n{log.getvalue()[-1500:]}") from None
    imgs = batches(calibration)
    if not imgs:
        raise ExporterError("PT2E int8 needs calibration images; none were given")
    with torch.no_grad():
        for b in imgs:
            for i in range(0, len(b), 8):
                graph(torch.from_numpy(np.ascontiguousarray(b[i : i + 8].transpose(0, 2, 3, 1), np.float32)))
                if progress:
                    progress()
    return graph, q


def freeze_ranges(graph) -> None:
    """Stop the activation/weight range updates of a prepared graph (fake quantization stays on)."""
    from torchao.quantization.pt2e import disable_observer

    graph.apply(disable_observer)


def convert(graph):
    """The prepared (calibrated or fine-tuned) graph with its fake quantizers turned into quantize/dequantize
    nodes of the same scales and zero points: the int8 model as PyTorch computes it (NHWC)."""
    from torchao.quantization.pt2e import quantize_pt2e

    with quiet_native() as log:
        try:
            return quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
        except Exception as e:  # noqa: BLE001
            raise ExporterError(f"convert_pt2e failed: {type(e).__name__}: {str(e)[:600]}\n"
                                f"{log.getvalue()[-1000:]}") from None


def to_tflite(converted, example: np.ndarray, quantizer) -> tuple[bytes, float]:
    """litert-torch's static-int8 conversion of a :func:`convert` graph; returns (file bytes, seconds)."""
    import torch

    preload_triton()
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    from torchao.quantization.pt2e import move_exported_model_to_eval

    _, c, h, w = np.asarray(example).shape
    t0 = time.time()
    # the graph was captured from the model in eval mode (BN folded, no dropout), but an exported module keeps
    # ``training=True`` and refuses ``.eval()``: litert-torch then warns "converted in training mode". Moved to eval
    # (the dropout/BN rewrite, a no-op here) and flagged so, which is what it computes.
    move_exported_model_to_eval(converted)
    for mod in converted.modules():
        mod.training = False
    with quiet_native() as log:
        try:
            edge = litert_torch.convert(converted, (torch.zeros(1, h, w, c),),
                                        quant_config=QuantConfig(pt2e_quantizer=quantizer))
            return bytes(edge.model_content()), time.time() - t0
        except Exception as e:  # noqa: BLE001 - lowering raises many types
            raise ExporterError(f"litert-torch could not convert the quantized graph: {type(e).__name__}: "
                                f"{str(e)[:600]}\n{log.getvalue()[-1500:]}") from None


def _fake_quantizers(graph) -> dict[str, object]:
    return {name: mod for name, mod in graph.named_modules() if hasattr(mod, "disable_fake_quant")}


def _is_weight(node) -> bool:
    return bool(node.args) and getattr(node.args[0], "op", None) == "get_attr"


def activation_quantizers(graph) -> list[str]:
    """The activation fake quantizers of a prepared graph (module names, graph order; weights' excluded). A
    quantizer shared by several tensors (concatenation, pooling) is listed once."""
    fqs = _fake_quantizers(graph)
    names: dict[str, None] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module" and node.target in fqs and not _is_weight(node):
            names.setdefault(node.target, None)
    return list(names)


def _conv_macs(graph, node) -> int:
    """Multiply-adds of an ``aten.conv2d``/``aten.linear`` node (0 for anything else)."""
    import operator

    name = str(node.target)
    if not (name.startswith("aten.conv2d") or name.startswith("aten.linear")) or len(node.args) < 2:
        return 0
    w = node.args[1]
    while getattr(w, "op", None) == "call_module":  # the weight's fake quantizer
        w = w.args[0]
    out = node.meta.get("val")
    if getattr(w, "op", None) != "get_attr" or out is None:
        return 0
    weight = operator.attrgetter(w.target)(graph)
    per_output = int(np.prod(weight.shape[1:]))  # Cin/groups * kh * kw (conv) or Cin (linear)
    return int(np.prod([int(v) for v in out.shape[1:]])) * per_output


def float_macs(graph, names) -> float:
    """The share (0-1) of the model's multiply-adds computed in float when activation quantizers ``names`` are
    left out: the convolutions that produce or consume those tensors (a convolution whose input or output is
    float runs in float)."""
    keep = set(names)
    total, floating = 0, 0
    for node in graph.graph.nodes:
        macs = _conv_macs(graph, node) if node.op == "call_function" else 0
        if not macs:
            continue
        total += macs
        x = node.args[0]
        float_in = getattr(x, "op", None) == "call_module" and x.target in keep
        float_out = any(u.op == "call_module" and u.target in keep for u in node.users)
        floating += macs if float_in or float_out else 0
    return floating / total if total else 0.0


def set_float(graph, names, float_: bool = True) -> None:
    """Turn the fake quantization of activation quantizers ``names`` off (their tensors stay float) or back on;
    for measuring a mix in PyTorch before it is written with :func:`drop_quantizers`."""
    fqs = _fake_quantizers(graph)
    for n in names:
        (fqs[n].disable_fake_quant if float_ else fqs[n].enable_fake_quant)()


def drop_quantizers(graph, names) -> None:
    """Remove activation quantizers ``names`` from a prepared graph, so :func:`convert` writes no quantize/
    dequantize there and litert-torch computes the ops around those tensors in float."""
    keep = set(names)
    for node in list(graph.graph.nodes):
        if node.op == "call_module" and node.target in keep:
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
    graph.recompile()
