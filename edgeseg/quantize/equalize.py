"""Cross-layer equalization (``edgeseg quantize --equalize``): rescale channels between two convolutions so int8
keeps more of them, without changing what the float model computes.

For a pair ``conv1 -> [BatchNorm] -> [ReLU/LeakyReLU/max-pool/identity...] -> conv2`` in which every step has a
single consumer, dividing channel ``i`` of ``conv1``'s output by ``s_i`` (through the BatchNorm's affine parameters
when there is one, else ``conv1``'s weights and bias) and multiplying ``conv2``'s input channel ``i`` by ``s_i``
leaves the output unchanged, because those in-between steps are positively homogeneous per channel
(``relu(x / s) = relu(x) / s`` for ``s > 0``). Hard-swish, ReLU6, sigmoid and residual additions are not, so pairs
through them are not touched: MobileNetV3's hard-swish blocks and MobileNetV2's ReLU6 blocks keep their scales
(replacing ReLU6 by ReLU, as the DFQ paper does, would change the reference model that parity is measured against).

Two rules pick ``s``:

* ``weights`` — the data-free rule of Nagel et al. 2019 ("Data-Free Quantization Through Weight Equalization and
  Bias Correction"): ``s_i = sqrt(r1_i / r2_i)`` with ``r1_i`` the range of ``conv1``'s output channel ``i`` *after*
  BatchNorm folding (what the converters quantize) and ``r2_i`` the range of ``conv2``'s input channel ``i``, so
  both become ``sqrt(r1_i r2_i)``; iterated over chains until the scales settle.
* ``activations`` — the range of the activation between the two convolutions, measured on the calibration images
  (``a_i``, per channel). Int8 activations are quantized per tensor and weights per output channel (TFLite, Core ML
  W8A8, NNCF), so a channel whose activations span 1/100 of the tensor's range keeps ~2 of its 256 levels. When
  ``conv2`` is depthwise its per-channel weight scales absorb any ``s_i``, so every channel is stretched to the
  tensor's range (``s_i = a_i / max a``, at most x64); for a regular ``conv2`` the stretch is balanced against the
  growth of its input-channel weights relative to their output channel's range (``s_i = sqrt(a_i / c_i)``, the
  SmoothQuant balance with alpha 0.5).

The transform keeps the model's structure (same modules, same state-dict keys), so every quantization route and
exporter takes the equalized model as it takes the original; ``Equalization.float_deviation`` records how far the
float outputs moved (float rounding only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from edgeseg.core.errors import UsageError

MODES = ("off", "weights", "activations")
MAX_STRETCH = 64.0  # activations: a channel's range is multiplied by at most this
_PASS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d)
_PASS_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.max_pool2d,
                   torch.nn.functional.avg_pool2d, torch.nn.functional.leaky_relu, torch.nn.functional.dropout}
_ITERATIONS = 20  # weights rule: chains settle in a few passes (max |log s| < 1e-4 is checked)


@dataclass
class Pair:
    """``producer`` (a Conv2d) feeds ``consumer`` (a Conv2d, regular or depthwise) through ``norm`` (its BatchNorm2d,
    or None) and ``through`` (positively homogeneous steps)."""

    producer: str
    norm: str | None
    consumer: str
    depthwise: bool
    through: list[str] = field(default_factory=list)
    scales: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        s = self.scales if self.scales is not None else np.ones(1)
        return {"producer": self.producer, "norm": self.norm, "consumer": self.consumer,
                "depthwise": self.depthwise, "through": self.through, "channels": int(s.size),
                "scale_min": float(s.min()), "scale_max": float(s.max())}


@dataclass
class Equalization:
    mode: str
    pairs: list[Pair]
    float_deviation: float  # max |logit difference| / max |logit| on the first calibration image

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "pairs": len(self.pairs), "float_deviation": self.float_deviation,
                "equalized": [p.to_json() for p in self.pairs]}


def _trace(model: nn.Module):
    import torch.fx as fx

    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 — any tracing failure means the same thing to the user
        raise UsageError(f"--equalize: {type(model).__name__} cannot be traced by torch.fx to find its "
                         f"convolution pairs ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                         f"use --equalize off for this model") from None


def find_pairs(model: nn.Module) -> list[Pair]:
    """The equalizable conv pairs of ``model`` (see the module docstring), in graph order."""
    gm = _trace(model)
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1

    def module(n) -> nn.Module | None:
        return gm.get_submodule(n.target) if n.op == "call_module" and calls[n.target] == 1 else None

    def passes(n) -> bool:
        m = module(n)
        if m is not None:
            return isinstance(m, _PASS_MODULES) and not (isinstance(m, nn.LeakyReLU) and m.negative_slope < 0)
        return n.op == "call_function" and n.target in _PASS_FUNCTIONS

    pairs = []
    for n in gm.graph.nodes:
        conv1 = module(n)
        if not isinstance(conv1, nn.Conv2d) or len(n.users) != 1:
            continue
        prev, cur, norm, through = n, next(iter(n.users)), None, []
        bn = module(cur)
        if isinstance(bn, nn.BatchNorm2d):
            if not (bn.affine and bn.track_running_stats) or len(cur.users) != 1:
                continue
            norm, prev, cur = cur.target, cur, next(iter(cur.users))
        while passes(cur) and len(cur.users) == 1 and cur.args and cur.args[0] is prev:
            through.append(str(cur.target if cur.op == "call_module" else cur.target.__name__))
            prev, cur = cur, next(iter(cur.users))
        conv2 = module(cur)
        if not isinstance(conv2, nn.Conv2d) or conv2.in_channels != conv1.out_channels or cur.args[0] is not prev:
            continue
        depthwise = conv2.groups == conv2.in_channels == conv2.out_channels
        if conv2.groups != 1 and not depthwise:
            continue
        pairs.append(Pair(n.target, norm, cur.target, depthwise, through))
    return pairs


def _producer_ranges(model: nn.Module, p: Pair) -> torch.Tensor:
    """Per output channel: the range of the producer's weights once the BatchNorm is folded into them."""
    w = model.get_submodule(p.producer).weight.detach().flatten(1).abs().amax(1)
    if p.norm is not None:
        bn = model.get_submodule(p.norm)
        w = w * (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).abs()
    return w


def _consumer_ranges(model: nn.Module, p: Pair, relative: bool) -> torch.Tensor:
    """Per input channel of the consumer: its weights' range (``relative``: each weight divided by the range of
    its output channel, i.e. the per-channel quantization step it is rounded to)."""
    w = model.get_submodule(p.consumer).weight.detach().abs()
    if p.depthwise:  # one filter per channel (``relative`` is asked for regular consumers only)
        return w.flatten(1).amax(1)
    if relative:
        w = w / w.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None]
    return w.transpose(0, 1).flatten(1).amax(1)


@torch.no_grad()
def _apply(model: nn.Module, p: Pair, s: torch.Tensor) -> None:
    """Channel ``i`` of the producer's (normalized) output divided by ``s_i``, the consumer's input multiplied."""
    if p.norm is not None:
        bn = model.get_submodule(p.norm)
        bn.weight.div_(s)
        bn.bias.div_(s)
    else:
        conv1 = model.get_submodule(p.producer)
        conv1.weight.div_(s.view(-1, *([1] * (conv1.weight.dim() - 1))))
        if conv1.bias is not None:
            conv1.bias.div_(s)
    w = model.get_submodule(p.consumer).weight
    w.mul_(s.view(-1, 1, 1, 1) if p.depthwise else s.view(1, -1, 1, 1))
    p.scales = s.cpu().numpy() if p.scales is None else p.scales * s.cpu().numpy()


@torch.no_grad()
def activation_ranges(model: nn.Module, pairs: list[Pair], images: Iterable[np.ndarray]) -> dict[str, torch.Tensor]:
    """Per consumer, the max |activation| of each input channel over ``images`` (NCHW float arrays)."""
    ranges: dict[str, torch.Tensor] = {}
    hooks = []
    for p in pairs:
        def hook(_m, args, name=p.consumer):
            a = args[0].detach().abs().amax(dim=(0, 2, 3)).float().cpu()
            ranges[name] = a if name not in ranges else torch.maximum(ranges[name], a)
        hooks.append(model.get_submodule(p.consumer).register_forward_pre_hook(hook))
    try:
        for x in images:
            model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    finally:
        for h in hooks:
            h.remove()
    return ranges


def equalize(model: nn.Module, mode: str, calibration: list[np.ndarray]) -> Equalization:
    """Equalize ``model`` in place (eval mode) with rule ``mode``; ``calibration`` are NCHW float arrays (the
    activation rule measures its ranges on them; the first one measures the float deviation)."""
    from edgeseg.core.registry import check_choice

    check_choice(mode, list(MODES), "--equalize")
    model.eval()
    if mode == "off":
        return Equalization(mode, [], 0.0)
    if not calibration:
        raise UsageError("--equalize needs calibration images")
    from edgeseg.core.latency import torch_runner

    run, x0 = torch_runner(model, torch.get_num_threads()), calibration[0]
    before = run(x0)
    pairs = find_pairs(model)
    if mode == "weights":
        for _ in range(_ITERATIONS):
            moved = 0.0
            for p in pairs:
                r1, r2 = _producer_ranges(model, p), _consumer_ranges(model, p, relative=False)
                ok = (r1 > 0) & (r2 > 0)
                s = torch.where(ok, torch.sqrt(r1 / r2.clamp_min(1e-12)), torch.ones_like(r1))
                _apply(model, p, s)
                moved = max(moved, float(s.log().abs().max()) if s.numel() else 0.0)
            if moved < 1e-4:
                break
    else:
        ranges = activation_ranges(model, pairs, calibration)
        for p in pairs:
            a = ranges[p.consumer].to(torch.float32)
            live = a > 0
            if not bool(live.any()):
                continue
            if p.depthwise:
                s = a / a.max()
            else:
                c = _consumer_ranges(model, p, relative=True)
                s = torch.sqrt(a / c.clamp_min(1e-12))
                s = s / s[live].max()
            s = torch.where(live, s.clamp_min(1.0 / MAX_STRETCH), torch.ones_like(s))
            _apply(model, p, s)
    dev = float(np.abs(run(x0) - before).max() / max(float(np.abs(before).max()), 1e-12))
    return Equalization(mode, pairs, dev)
