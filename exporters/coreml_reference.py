"""Reference execution of a saved Core ML program (``.mlpackage``) on any OS.

coremltools can read an ML Program and its weight blobs back into its MIL representation on Linux
(``milproto.load``), but only macOS's Core ML framework can run it. This module runs that MIL program
op by op with PyTorch kernels, so the masks of the *saved artifact* — its graph, its stored weights, its
compression — can be compared with the PyTorch model anywhere:

* every op is looked up in :data:`KERNELS`; an op without a kernel is an :class:`UnsupportedOp` error
  naming it, never skipped;
* compressed weights are decompressed from what is stored (``constexpr_affine_dequantize``,
  ``constexpr_lut_to_dense``, ``constexpr_blockwise_shift_scale``, ``constexpr_sparse_to_dense``);
* values the program types as fp16 are rounded to fp16 after every op (fp16 storage), while kernels
  compute in fp32 — what Core ML's CPU and GPU paths do with fp16 programs; the neural engine may
  differ slightly more, which only a Mac can measure.

It is a reference, not a runtime: no fusion, no scheduling, just the program's arithmetic.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from exporters.base import ExporterError

RUNTIME = "reference execution of the Core ML program (coremltools MIL loader + PyTorch kernels)"


class UnsupportedOp(ExporterError):
    """The program holds an op this reference has no kernel for."""


def load_program(path: Path):
    """The ``main`` function of a saved ``.mlpackage`` as coremltools' MIL objects, weights read from disk."""
    from exporters.coreml_tools import import_ct
    from exporters.native import quiet_native

    ct = import_ct()
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    path = Path(path)
    weights = path / "Data" / "com.apple.CoreML" / "weights"
    try:
        with quiet_native():
            spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
            program = milproto_load(spec, spec.specificationVersion, str(weights))
    except ExporterError:
        raise
    except Exception as e:  # noqa: BLE001 - protobuf/blob readers raise many types
        raise ExporterError(f"'{path}' is not a readable Core ML ML Program ({type(e).__name__}: {e})") from None
    if "main" not in program.functions:
        raise ExporterError(f"'{path}' has no 'main' function")
    return spec, program.functions["main"]


def _dtype_name(var) -> str:
    from coremltools.converters.mil.mil import types

    try:
        return types.builtin_to_string(var.dtype)
    except Exception:  # noqa: BLE001 - tensor/list types
        return "?"


# ---------------------------------------------------------------------------------------------------------
# Kernels: (op, inputs: dict of name -> torch tensor / python value) -> tuple of outputs
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` for one call, then given back: a runner must not change the
    thread count of the process it is loaded in (a test worker or an app server set theirs on purpose)."""
    torch = _torch()
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _torch():
    import torch

    return torch


def _pad_2d(op, x, kernel: tuple[int, int], strides, dilations, pad_type: str, pad):
    """Explicit (top, bottom, left, right) padding of MIL's pad_type for a 2-D window."""
    if pad_type == "custom":
        return [int(p) for p in pad]
    if pad_type == "valid":
        return [0, 0, 0, 0]
    if pad_type in ("same", "same_lower"):
        out = []
        for i, (size, k, s, d) in enumerate(zip(x.shape[2:], kernel, strides, dilations)):
            eff = (k - 1) * d + 1
            total = max((-(-size // s) - 1) * s + eff - size, 0)
            lo = total // 2 if pad_type == "same" else total - total // 2
            out += [lo, total - lo]
        return out
    raise UnsupportedOp(f"op '{op.name}' ({op.op_type}): pad_type '{pad_type}' is not supported")


def _conv(op, v):
    torch = _torch()
    F = torch.nn.functional
    x, w = v["x"], v["weight"]
    if x.dim() != 4:
        raise UnsupportedOp(f"op '{op.name}' (conv): only 2-D convolutions are supported, got rank {x.dim()}")
    strides = [int(s) for s in v.get("strides", [1, 1])]
    dil = [int(d) for d in v.get("dilations", [1, 1])]
    groups = int(v.get("groups", 1))
    t, b, l, r = _pad_2d(op, x, tuple(w.shape[2:]), strides, dil, v.get("pad_type", "valid"), v.get("pad", [0] * 4))
    x = F.pad(x, (l, r, t, b))
    return F.conv2d(x, w, v.get("bias"), stride=strides, dilation=dil, groups=groups)


def _conv_transpose(op, v):
    torch = _torch()
    F = torch.nn.functional
    x, w = v["x"], v["weight"]
    strides = [int(s) for s in v.get("strides", [1, 1])]
    dil = [int(d) for d in v.get("dilations", [1, 1])]
    groups = int(v.get("groups", 1))
    pad_type = v.get("pad_type", "valid")
    if pad_type not in ("valid", "custom"):
        raise UnsupportedOp(f"op '{op.name}' (conv_transpose): pad_type '{pad_type}' is not supported")
    pad = [int(p) for p in v.get("pad", [0] * 4)] if pad_type == "custom" else [0] * 4
    # MIL weight layout for conv_transpose: [C_in, C_out / groups, kH, kW] (as torch's)
    y = F.conv_transpose2d(x, w, v.get("bias"), stride=strides, dilation=dil, groups=groups)
    h, wd = y.shape[2], y.shape[3]
    y = y[:, :, pad[0]: h - pad[1], pad[2]: wd - pad[3]]
    if "output_shape" in v and v["output_shape"] is not None:
        oh, ow = [int(s) for s in list(v["output_shape"])[-2:]]
        y = y[:, :, :oh, :ow]
    return y


def _pool(kind):
    def run(op, v):
        torch = _torch()
        F = torch.nn.functional
        x = v["x"]
        k = [int(i) for i in v["kernel_sizes"]]
        s = [int(i) for i in v.get("strides", k)]
        t, b, l, r = _pad_2d(op, x, tuple(k), s, (1, 1), v.get("pad_type", "valid"), v.get("pad", [0] * 4))
        ceil = bool(v.get("ceil_mode", False))
        if kind == "max":
            x = F.pad(x, (l, r, t, b), value=float("-inf"))
            return F.max_pool2d(x, k, s, ceil_mode=ceil)
        exclude = bool(v.get("exclude_padding_from_average", False))
        if exclude and any((t, b, l, r)):
            ones = F.pad(torch.ones_like(x[:, :1]), (l, r, t, b))
            x = F.pad(x, (l, r, t, b))
            return F.avg_pool2d(x, k, s, ceil_mode=ceil) / F.avg_pool2d(ones, k, s, ceil_mode=ceil)
        return F.avg_pool2d(F.pad(x, (l, r, t, b)), k, s, ceil_mode=ceil)

    return run


def _resize(op, v, size, align_corners: bool, half_pixel: bool = True):
    torch = _torch()
    F = torch.nn.functional
    x = v["x"]
    if align_corners:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    if not half_pixel:
        raise UnsupportedOp(f"op '{op.name}' ({op.op_type}): non-half-pixel sampling is not supported")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _upsample_bilinear(op, v):
    x = v["x"]
    sh, sw = float(v.get("scale_factor_height", 1)), float(v.get("scale_factor_width", 1))
    size = (int(np.floor(x.shape[2] * sh)), int(np.floor(x.shape[3] * sw)))
    return _resize(op, v, size, bool(v.get("align_corners", False)), bool(v.get("half_pixel_centers", True)))


def _resize_bilinear(op, v):
    mode = v.get("sampling_mode", "DEFAULT")
    size = (int(v["target_size_height"]), int(v["target_size_width"]))
    if mode == "ALIGN_CORNERS":
        return _resize(op, v, size, True)
    if mode in ("DEFAULT", "STRICT_ALIGN_CORNERS", "UNALIGN_CORNERS"):
        if mode == "DEFAULT":
            raise UnsupportedOp(f"op '{op.name}' (resize_bilinear): sampling_mode DEFAULT is not supported")
        return _resize(op, v, size, mode == "STRICT_ALIGN_CORNERS", mode == "UNALIGN_CORNERS")
    raise UnsupportedOp(f"op '{op.name}' (resize_bilinear): sampling_mode '{mode}' is not supported")


def _upsample_nearest(op, v):
    torch = _torch()
    x = v["x"]
    sh, sw = float(v.get("scale_factor_height", 1)), float(v.get("scale_factor_width", 1))
    size = (int(np.floor(x.shape[2] * sh)), int(np.floor(x.shape[3] * sw)))
    return torch.nn.functional.interpolate(x, size=size, mode="nearest")


def _reduce(fn_name):
    def run(op, v):
        torch = _torch()
        x = v["x"]
        axes = v.get("axes")
        keep = bool(v.get("keep_dims", False))
        dims = tuple(range(x.dim())) if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
        if fn_name == "mean":
            return x.mean(dim=dims, keepdim=keep)
        if fn_name == "sum":
            return x.sum(dim=dims, keepdim=keep)
        if fn_name == "max":
            return x.amax(dim=dims, keepdim=keep)
        if fn_name == "min":
            return x.amin(dim=dims, keepdim=keep)
        return torch.sqrt((x * x).sum(dim=dims, keepdim=keep))  # l2_norm

    return run


def _slice_by_index(op, v):
    x = v["x"]
    begin = [int(b) for b in v["begin"]]
    end = [int(e) for e in v["end"]]
    n = x.dim()
    stride = [int(s) for s in v.get("stride", [1] * n)]
    bmask = [bool(m) for m in v.get("begin_mask", [False] * n)]
    emask = [bool(m) for m in v.get("end_mask", [False] * n)]
    smask = [bool(m) for m in v.get("squeeze_mask", [False] * n)]
    idx = []
    for d in range(n):
        b = None if bmask[d] else begin[d]
        e = None if emask[d] else end[d]
        if smask[d]:
            idx.append(begin[d])
        else:
            idx.append(slice(b, e, stride[d]))
    return x[tuple(idx)]


def _cast(op, v):
    torch = _torch()
    dt = {"fp16": torch.float16, "fp32": torch.float32, "int32": torch.int32, "int16": torch.int16,
          "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}.get(v["dtype"])
    if dt is None:
        raise UnsupportedOp(f"op '{op.name}' (cast): dtype '{v['dtype']}' is not supported")
    x = v["x"]
    if dt == torch.float16:
        return x.to(torch.float16).to(torch.float32)
    if dt == torch.float32:
        return x.to(torch.float32)
    return x.to(dt)


def _batch_norm(op, v):
    torch = _torch()
    x = v["x"]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = (x - v["mean"].view(shape)) / torch.sqrt(v["variance"].view(shape) + float(v.get("epsilon", 1e-5)))
    if v.get("gamma") is not None:
        y = y * v["gamma"].view(shape)
    if v.get("beta") is not None:
        y = y + v["beta"].view(shape)
    return y


def _concat(op, v):
    torch = _torch()
    if v.get("interleave", False):
        raise UnsupportedOp(f"op '{op.name}' (concat): interleave=True is not supported")
    return torch.cat(list(v["values"]), dim=int(v["axis"]))


def _pad(op, v):
    torch = _torch()
    x = v["x"]
    pad = [int(p) for p in v["pad"]]
    mode = v.get("mode", "constant")
    # MIL: pairs (before, after) from the first padded axis; torch: from the last axis backwards
    pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)]
    flat = [p for before, after in reversed(pairs) for p in (before, after)]
    if mode == "constant":
        return torch.nn.functional.pad(x, flat, value=float(v.get("constant_val", 0.0)))
    if mode in ("reflect", "replicate"):
        return torch.nn.functional.pad(x, flat, mode=mode)
    raise UnsupportedOp(f"op '{op.name}' (pad): mode '{mode}' is not supported")


def _elementwise(fn: Callable) -> Callable:
    return lambda op, v: fn(v["x"], v["y"])


def _unary(fn: Callable) -> Callable:
    return lambda op, v: fn(v["x"])


def _kernels() -> dict[str, Callable]:
    torch = _torch()
    F = torch.nn.functional
    return {
        "conv": _conv,
        "conv_transpose": _conv_transpose,
        "max_pool": _pool("max"),
        "avg_pool": _pool("avg"),
        "upsample_bilinear": _upsample_bilinear,
        "resize_bilinear": _resize_bilinear,
        "upsample_nearest_neighbor": _upsample_nearest,
        "batch_norm": _batch_norm,
        "add": _elementwise(torch.add),
        "sub": _elementwise(torch.sub),
        "mul": _elementwise(torch.mul),
        "real_div": _elementwise(torch.div),
        "maximum": _elementwise(torch.maximum),
        "minimum": _elementwise(torch.minimum),
        "pow": _elementwise(torch.pow),
        "relu": _unary(F.relu),
        "relu6": _unary(lambda x: F.hardtanh(x, 0.0, 6.0)),
        "sigmoid": _unary(torch.sigmoid),
        "tanh": _unary(torch.tanh),
        "silu": _unary(F.silu),
        "sqrt": _unary(torch.sqrt),
        "rsqrt": lambda op, v: torch.rsqrt(v["x"] + float(v.get("epsilon", 1e-12))),
        "exp": _unary(torch.exp),
        "abs": _unary(torch.abs),
        "square": _unary(torch.square),
        "sigmoid_hard": lambda op, v: torch.clamp(float(v.get("alpha", 0.2)) * v["x"] + float(v.get("beta", 0.5)),
                                                  0.0, 1.0),
        "thresholded_relu": lambda op, v: torch.where(v["x"] > float(v.get("alpha", 1.0)), v["x"],
                                                      torch.zeros_like(v["x"])),
        "leaky_relu": lambda op, v: F.leaky_relu(v["x"], float(v.get("alpha", 0.01))),
        "clip": lambda op, v: torch.clamp(v["x"], float(v["alpha"]), float(v["beta"])),
        "softmax": lambda op, v: torch.softmax(v["x"], dim=int(v.get("axis", -1))),
        "reduce_mean": _reduce("mean"),
        "reduce_sum": _reduce("sum"),
        "reduce_max": _reduce("max"),
        "reduce_min": _reduce("min"),
        "reduce_l2_norm": _reduce("l2"),
        "reduce_argmax": lambda op, v: torch.argmax(v["x"], dim=int(v.get("axis", -1)),
                                                    keepdim=bool(v.get("keep_dims", False))).to(torch.int32),
        "concat": _concat,
        "reshape": lambda op, v: v["x"].reshape([int(s) for s in v["shape"]]),
        "transpose": lambda op, v: v["x"].permute([int(p) for p in v["perm"]]),
        "squeeze": lambda op, v: (v["x"].squeeze() if v.get("axes") is None
                                  else v["x"].squeeze(tuple(int(a) for a in v["axes"]))),
        "expand_dims": lambda op, v: _expand(v["x"], [int(a) for a in v["axes"]]),
        "slice_by_index": _slice_by_index,
        "slice_by_size": lambda op, v: v["x"][tuple(slice(int(b), None if int(s) < 0 else int(b) + int(s))
                                                    for b, s in zip(v["begin"], v["size"]))],
        "pad": _pad,
        "cast": _cast,
        "identity": _unary(lambda x: x),
        "matmul": lambda op, v: torch.matmul(v["x"].transpose(-1, -2) if v.get("transpose_x") else v["x"],
                                             v["y"].transpose(-1, -2) if v.get("transpose_y") else v["y"]),
        "linear": lambda op, v: F.linear(v["x"], v["weight"], v.get("bias")),
        "quantize": _quantize,
        "dequantize": _dequantize,
        # detection post-processing (Mask R-CNN's export graph)
        "equal": _elementwise(torch.eq),
        "not_equal": _elementwise(torch.ne),
        "greater": _elementwise(torch.gt),
        "greater_equal": _elementwise(torch.ge),
        "less": _elementwise(torch.lt),
        "less_equal": _elementwise(torch.le),
        "logical_and": _elementwise(torch.logical_and),
        "logical_or": _elementwise(torch.logical_or),
        "logical_not": _unary(torch.logical_not),
        "floor": _unary(torch.floor),
        "log": lambda op, v: torch.log(v["x"] + float(v.get("epsilon", 1e-45))),
        "select": lambda op, v: torch.where(_tensor(v["cond"]).bool(), _tensor(v["a"]), _tensor(v["b"])),
        "stack": lambda op, v: torch.stack([_tensor(t) for t in v["values"]], dim=int(v["axis"])),
        "tile": lambda op, v: v["x"].repeat(*[int(r) for r in v["reps"]]),
        "gather": _gather,
        "topk": _topk,
    }


def _tensor(x):
    torch = _torch()
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def _gather(op, v):
    """MIL ``gather``: ``x`` indexed along ``axis`` by ``indices`` of any shape (negative indices count back)."""
    x, idx = v["x"], _tensor(v["indices"]).long()
    axis = int(v.get("axis", 0)) % x.dim()
    if int(v.get("batch_dims", 0)):
        raise UnsupportedOp(f"op '{op.name}' (gather): batch_dims > 0 is not supported")
    idx = torch_where_negative(idx, x.shape[axis])
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]))


def torch_where_negative(idx, size: int):
    return idx + size * (idx < 0).long()


def _topk(op, v):
    """MIL ``topk``: values and int32 indices of the ``k`` largest (or smallest) along ``axis``, sorted."""
    torch = _torch()
    x = v["x"]
    vals, idx = torch.topk(x, int(v.get("k", 1)), dim=int(v.get("axis", -1)),
                           largest=not bool(v.get("ascending", False)), sorted=True)
    return vals, idx.to(torch.int32)


_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


def _affine_params(v, x):
    torch = _torch()
    scale = v["scale"] if isinstance(v["scale"], torch.Tensor) else torch.tensor(float(v["scale"]))
    zp = v.get("zero_point")
    zp = torch.zeros(()) if zp is None else (zp.float() if isinstance(zp, torch.Tensor) else torch.tensor(float(zp)))
    axis = v.get("axis")
    if scale.dim() == 1 and axis is not None:
        shape = [1] * x.dim()
        shape[int(axis)] = -1
        scale, zp = scale.view(shape), (zp.view(shape) if zp.dim() == 1 else zp)
    return scale.float(), zp


def _quantize(op, v):
    """iOS17 ``quantize``: round(x / scale + zero_point), saturated to the output integer type."""
    torch = _torch()
    lo, hi = _INT_RANGE.get(v.get("output_dtype", "int8"), (None, None))
    if lo is None:
        raise UnsupportedOp(f"op '{op.name}' (quantize): output_dtype '{v.get('output_dtype')}' is not supported")
    scale, zp = _affine_params(v, v["input"])
    return torch.clamp(torch.round(v["input"] / scale + zp), lo, hi)


def _dequantize(op, v):
    """iOS17 ``dequantize``: (q - zero_point) * scale."""
    scale, zp = _affine_params(v, v["input"])
    return (v["input"].float() - zp) * scale


def _expand(x, axes):
    for a in sorted(a if a >= 0 else a + x.dim() + len(axes) for a in axes):
        x = x.unsqueeze(a)
    return x


# ---------------------------------------------------------------------------------------------------------
# Weight decompression: what is stored -> the dense weight the program computes with
# ---------------------------------------------------------------------------------------------------------


def decompress(op, v: dict[str, Any]) -> np.ndarray:
    """Dense weights of a ``constexpr_*`` op from its stored (numpy) inputs."""
    t = op.op_type
    if t == "constexpr_affine_dequantize":
        q = np.asarray(v["quantized_data"]).astype(np.float32)
        axis = int(v["axis"])
        shape = [1] * q.ndim
        zp, sc = np.asarray(v["zero_point"], np.float32), np.asarray(v["scale"], np.float32)
        if zp.ndim:
            shape[axis] = -1
        return ((q - zp.reshape(shape if zp.ndim else ())) * sc.reshape(shape if sc.ndim else ())).astype(np.float32)
    if t == "constexpr_lut_to_dense" and "shape" in v:  # iOS16/17: 1-D LUT, indices packed LSB first
        lut = np.asarray(v["lut"], np.float32)
        shape = [int(s) for s in np.asarray(v["shape"])]
        size = int(np.prod(shape))
        nbits = int(np.log2(lut.shape[0]))
        bits = np.unpackbits(np.asarray(v["indices"], np.uint8), bitorder="little")[: nbits * size]
        idx = (bits.reshape(size, nbits).astype(np.int64) << np.arange(nbits)).sum(1)
        return lut[idx].reshape(shape)
    if t == "constexpr_lut_to_dense":  # iOS18: per-block LUTs [..., K, vector_size], indices of the dense shape
        lut = np.asarray(v["lut"], np.float32)
        idx = np.asarray(v["indices"]).astype(np.int64)
        if lut.shape[-1] != 1:
            raise UnsupportedOp(f"op '{op.name}' (constexpr_lut_to_dense): vector palettization is not supported")
        lut = lut[..., 0]  # [b0, b1, ..., K]
        out = np.empty(idx.shape, np.float32)
        blocks = [idx.shape[d] // lut.shape[d] for d in range(idx.ndim)]
        for bidx in np.ndindex(*lut.shape[:-1]):
            sl = tuple(slice(b * s, (b + 1) * s) for b, s in zip(bidx, blocks))
            out[sl] = lut[bidx][idx[sl]]
        return out
    if t == "constexpr_blockwise_shift_scale":
        data = np.asarray(v["data"]).astype(np.float32)
        scale = np.asarray(v["scale"], np.float32)
        offset = np.asarray(v["offset"], np.float32) if v.get("offset") is not None else None
        reps = [d // s for d, s in zip(data.shape, scale.shape)]
        sc = np.repeat(np.repeat(scale, 1, 0), 1, 0)
        for ax, r in enumerate(reps):
            sc = np.repeat(sc, r, axis=ax)
        if offset is not None:
            off = offset
            for ax, r in enumerate(reps):
                off = np.repeat(off, r, axis=ax)
            data = data - off
        return data * sc
    if t == "constexpr_sparse_to_dense" and "shape" in v:
        nz = np.asarray(v["nonzero_data"], np.float32)
        mask = np.unpackbits(np.asarray(v["mask"], np.uint8), bitorder="little").astype(bool)
        shape = [int(s) for s in np.asarray(v["shape"])]
        out = np.zeros(int(np.prod(shape)), np.float32)
        out[mask[: out.size]] = nz
        return out.reshape(shape)
    raise UnsupportedOp(f"op '{op.name}' ({t}): this weight compression is not supported")


class MILReference:
    """Runs the ``main`` function of a saved ``.mlpackage`` with PyTorch kernels (see module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.spec, self.fn = load_program(self.path)
        self.kernels = _kernels()
        self.inputs = list(self.fn.inputs)
        self.outputs = [o.name for o in self.fn.outputs]
        missing = sorted({op.op_type for op in self.fn.operations
                          if op.op_type != "const" and not op.op_type.startswith("constexpr_")
                          and op.op_type not in self.kernels})
        if missing:
            raise UnsupportedOp(f"'{self.path}' uses Core ML op(s) {', '.join(missing)} that the reference "
                                f"execution has no kernel for; it cannot verify this model")
        self._consts = self._materialize_constants()

    def _value(self, var, env):
        if var.name in env:
            return env[var.name]
        if var.val is not None:
            return self._as_input(var.val)
        raise ExporterError(f"'{self.path}': value '{var.name}' is used before it is computed")

    @staticmethod
    def _as_input(val):
        torch = _torch()
        if isinstance(val, np.ndarray) and val.dtype.kind == "f":
            return torch.from_numpy(np.ascontiguousarray(val.astype(np.float32)))
        if isinstance(val, np.ndarray) and val.dtype.kind in "iub" and val.ndim >= 1 and val.size > 16:
            return torch.from_numpy(np.ascontiguousarray(val.astype(np.int64)))
        if isinstance(val, np.ndarray):
            return val.tolist() if val.ndim else val.item()
        if isinstance(val, (np.floating, np.integer, np.bool_)):
            return val.item()
        return val

    def _materialize_constants(self) -> dict[str, Any]:
        """Convert every const and decompress every constexpr op once (weights do not change)."""
        torch = _torch()
        env: dict[str, Any] = {}
        for op in self.fn.operations:
            if op.op_type == "const":
                env[op.outputs[0].name] = self._as_input(op.outputs[0].val)
                continue
            if not op.op_type.startswith("constexpr_"):
                continue
            raw = {k: (v.val if v.val is not None else None) for k, v in op.inputs.items()}
            dense = decompress(op, raw)
            out = op.outputs[0]
            if _dtype_name(out) == "fp16":
                dense = dense.astype(np.float16).astype(np.float32)
            env[out.name] = torch.from_numpy(np.ascontiguousarray(dense))
        return env

    def dense_weights(self) -> dict[str, np.ndarray]:
        """Every decompressed weight, by the name of the constexpr op's output."""
        return {op.outputs[0].name: self._consts[op.outputs[0].name].numpy() for op in self.fn.operations
                if op.op_type.startswith("constexpr_")}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = _torch()
        env: dict[str, Any] = dict(self._consts)
        for name, var in self.fn.inputs.items():
            if name not in feeds:
                raise ExporterError(f"'{self.path}': missing input '{name}'")
            x = torch.from_numpy(np.ascontiguousarray(np.asarray(feeds[name], np.float32)))
            env[name] = x.half().float() if _dtype_name(var) == "fp16" else x
        with torch.no_grad():
            for op in self.fn.operations:
                if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                    continue
                args = {}
                for k, v in op.inputs.items():
                    if isinstance(v, (list, tuple)):
                        args[k] = [self._value(u, env) for u in v]
                    else:
                        args[k] = self._value(v, env)
                try:
                    result = self.kernels[op.op_type](op, args)
                except UnsupportedOp:
                    raise
                except Exception as e:  # noqa: BLE001 - a kernel failing is a reference bug or a bad program
                    raise ExporterError(f"'{self.path}': op '{op.name}' ({op.op_type}) failed in the reference "
                                        f"execution: {type(e).__name__}: {e}") from None
                results = result if isinstance(result, (tuple, list)) else (result,)
                for out, val in zip(op.outputs, results):
                    if _dtype_name(out) == "fp16" and val.is_floating_point():
                        val = val.to(torch.float16).to(torch.float32)  # fp16 storage between ops
                    env[out.name] = val
        return {name: env[name].numpy() for name in self.outputs}



class ReferenceRunner:
    """The common Runner interface over :class:`MILReference`: normalized NCHW float32 in, logits out.

    The program's image input takes pixels, so the caller's normalization is undone with the model's own
    metadata and rounded to 8-bit pixels, as an app's camera frame would be.
    """

    def __init__(self, path: Path, threads: int = 2) -> None:
        from exporters.coreml_tools import package_io

        self.threads = threads
        self.ref = MILReference(path)
        self.mean, self.std, self.input_kind = package_io(dict(self.ref.spec.description.metadata.userDefined), path)
        self.input = self.ref.inputs[0]
        self.output = self.ref.outputs[0]
        self.runtime = RUNTIME
        self.is_reference = True  # its speed says nothing about a device

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits [N, C, H, W], or the class map [N, H, W] of an argmax model."""
        from exporters.coreml_tools import to_pixels

        outs = []
        for img in np.asarray(x, np.float32):
            if self.input_kind == "multiarray":
                feed = img[None]
            else:
                feed = to_pixels(img, self.mean, self.std).astype(np.float32).transpose(2, 0, 1)[None]
            with _torch_threads(self.threads):
                outs.append(np.asarray(self.ref.run({self.input: feed})[self.output]))
        return np.concatenate(outs)


class GraphReferenceRunner:
    """Reference execution of a multi-output graph package (image input, scale 1/255): NCHW RGB float32 in [0, 1]
    in (rounded to 8-bit pixels, as a camera frame holds them), ``{output name: array}`` out."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        self.threads = threads
        self.ref = MILReference(path)
        self.input = self.ref.inputs[0]
        self.runtime = RUNTIME
        self.is_reference = True

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        pixels = np.clip(np.round(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.float32)
        with _torch_threads(self.threads):
            return self.ref.run({self.input: pixels})
