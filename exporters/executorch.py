"""ExecuTorch target: PyTorch's on-device runtime (``.pte``), every op it can place on the XNNPACK delegate.

The route: ``torch.export`` (eval, NCHW float input as the model takes it) -> edge dialect -> XNNPACK partitioner
(``to_edge_transform_and_lower``) -> ``.pte``. No ONNX and no layout translation: the file computes the PyTorch
graph. Precisions:

* ``fp32``: the float graph, XNNPACK's float kernels.
* ``int8``: XNNPACK's own PT2E quantizer (``XNNPACKQuantizer``, symmetric per-channel int8 weights, per-tensor int8
  activations), ranges observed on ``options.calibration`` (the run's calibration images), ``convert_pt2e``; the
  delegate runs each ``dequantize -> op -> quantize`` as its int8 kernel. :func:`activation_quantizers`,
  :func:`with_float` and :func:`float_macs` let a mixed-precision search keep activations float (edgeseg's export
  step measures the int8 file and searches when it fails its gate).

Measured on the quickstart's LR-ASPP (128 px): NCHW input lowers to one XNNPACK partition; an NHWC-input wrapper
(what the TFLite files take) split it into ten partitions and ran slower (a throw-away probe), so the file keeps the
model's own NCHW input, as ExecuTorch's Android/iOS tensor helpers make it. BatchNorm is folded into the
convolutions by the delegate's passes (float) or by ``prepare_pt2e`` (int8).

Every export records its **delegation coverage** (:func:`coverage`): partitions, the ops run by XNNPACK, the
compute ops left to ExecuTorch's portable kernels (the silent fallback users meet on the phone) and the nodes that
only touch constants (copies of scalar constants, on a few bytes per call). Files are run by ExecuTorch's own runtime
(:class:`PteRunner`: the ``.pte`` through its XNNPACK and portable kernels, not PyTorch).
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from exporters.atomic import atomic_path
from exporters.base import (ExporterError, ExportOptions, ExportResult, Target, batches, check_precision, class_map,
                            path_size)
from exporters.native import preload_triton, quiet_native

QUANTIZER = "XNNPACKQuantizer (PT2E): int8 weights symmetric per channel, int8 activations per tensor"

#: why a multi-output graph (Mask R-CNN's) is refused: measured once with a throw-away probe (untrained, 64 px)
GRAPH_REFUSAL = ("target 'executorch' takes semantic models for now, not a multi-output graph: Mask R-CNN's static "
                 "graph does lower (measured at 64 px: 111 s, 55 XNNPACK partitions, 224 ops left to the portable "
                 "kernels: the topk, index and where of its NMS and RoIAlign), but its instance parity through "
                 "ExecuTorch's runtime is not built; export it to tflite, coreml or onnx")


def version() -> str:
    from executorch.version import __version__

    return __version__


def _contiguous(x: np.ndarray):
    import torch

    # a broadcast view (stride 0) is refused by ExecuTorch's memory planning ("0 in strides")
    return torch.from_numpy(np.array(x, np.float32, copy=True, order="C"))


def quantized_graph(model, example: np.ndarray, calibration: Sequence[np.ndarray]):
    """``model`` captured by ``torch.export``, quantized with XNNPACK's PT2E quantizer and calibrated on
    ``calibration`` (NCHW batches): the converted graph, int8 weights folded, a quantize/dequantize pair on every
    activation, as PyTorch computes it. Returns ``(graph, images used)``."""
    preload_triton()
    import torch

    imgs = batches(calibration)
    if not imgs:
        raise ExporterError("ExecuTorch int8 needs calibration images; none were given")
    with quiet_native() as log:
        try:
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                                 get_symmetric_quantization_config)
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            graph = torch.export.export(model.eval().cpu(), (_contiguous(example),)).module()
            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            prepared = prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for b in imgs:
                    prepared(_contiguous(b))
            return convert_pt2e(prepared), len(imgs)
        except Exception as e:  # noqa: BLE001 - torch.export / annotation raise many types
            raise ExporterError(f"ExecuTorch int8 quantization failed: {type(e).__name__}: {str(e)[:600]}\n"
                                f"{log.getvalue()[-1500:]}") from None


def _is_op(node, name: str) -> bool:
    return node.op == "call_function" and name in str(node.target)


def activation_quantizers(graph) -> list[str]:
    """The activation quantize nodes of a :func:`quantized_graph` (node names, graph order): what a mixed-precision
    search may leave out, keeping that tensor (and the ops around it) float."""
    return [n.name for n in graph.graph.nodes
            if _is_op(n, "quantize_per_tensor") and not _is_op(n, "dequantize") and n.args
            and getattr(n.args[0], "op", None) != "get_attr"]


def _attr(graph, node):
    import operator

    return operator.attrgetter(node.target)(graph) if getattr(node, "op", None) == "get_attr" else node


def _weight_shape(graph, conv) -> tuple[int, ...] | None:
    w = conv.args[1]
    while _is_op(w, "dequantize"):  # int8 weights folded by convert_pt2e: get_attr -> dequantize_per_channel
        w = w.args[0]
    t = _attr(graph, w)
    return tuple(t.shape) if hasattr(t, "shape") else None


def _float_convs(graph, names) -> dict[Any, bool]:
    """Every convolution of ``graph`` -> whether it computes in float once the activations ``names`` stay float: its
    input not dequantized int8, or its output (after a fused ReLU/clamp) not quantized, which is what XNNPACK's
    int8 convolution needs; such a convolution runs at fp32."""
    keep = set(names)
    convs = {}
    for node in graph.graph.nodes:
        if not (_is_op(node, "conv2d") or _is_op(node, "convolution")) or len(node.args) < 2:
            continue
        x = node.args[0]
        float_in = not _is_op(x, "dequantize_per_tensor") or getattr(x.args[0], "name", "") in keep
        nxt, float_out = node, True  # float unless its output reaches a quantize the mix keeps
        for _ in range(2):  # conv -> [relu / clamp: fused into the int8 conv] -> quantize
            users = list(nxt.users)
            if len(users) != 1:
                break
            nxt = users[0]
            if _is_op(nxt, "quantize_per_tensor"):
                float_out = nxt.name in keep
                break
            if not any(_is_op(nxt, a) for a in ("relu", "clamp", "hardtanh")):
                break  # another op (add, mul, ...) reads the conv's float output
        convs[node] = float_in or float_out
    return convs


def with_float(graph, names) -> Any:
    """A copy of ``graph`` with the quantize/dequantize pairs of ``names`` removed: those tensors stay float, and
    XNNPACK runs the ops that produce and consume them at fp32 in the lowered file. A convolution that becomes
    float takes its weights as float constants with the int8 grid's values (what the PyTorch graph computes; an
    int8 weight dequantized outside the delegate has no portable kernel)."""
    import copy

    keep = set(names)
    g = copy.deepcopy(graph)
    for node in list(g.graph.nodes):
        if node.name in keep:
            for user in list(node.users):
                if _is_op(user, "dequantize_per_tensor"):
                    user.replace_all_uses_with(node.args[0])
                    g.graph.erase_node(user)
            if not node.users:
                g.graph.erase_node(node)
    for k, (conv, floating) in enumerate(_float_convs(g, ()).items()):
        w = conv.args[1]
        if not floating or not _is_op(w, "dequantize"):
            continue
        value = w.target(*[_attr(g, a) for a in w.args], **w.kwargs)
        g.register_buffer(f"_edgeseg_float_weight_{k}", value.detach().clone())
        with g.graph.inserting_before(conv):
            const = g.graph.get_attr(f"_edgeseg_float_weight_{k}")
        conv.replace_input_with(w, const)
        if not w.users:
            g.graph.erase_node(w)
    g.graph.eliminate_dead_code()
    g.recompile()
    return g


def float_macs(graph, names) -> float:
    """The share (0-1) of the convolutions' multiply-adds computed in float when the activations ``names`` stay
    float (see :func:`with_float`)."""
    total = floating = 0
    for conv, is_float in _float_convs(graph, names).items():
        shape, out = _weight_shape(graph, conv), conv.meta.get("val")
        if shape is None or out is None:
            continue
        macs = int(np.prod(out.shape[1:])) * int(np.prod(shape[1:]))
        total += macs
        floating += macs if is_float else 0
    return floating / total if total else 0.0


def lower(model, example: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """``model`` (a module or a quantized graph) through ``torch.export`` and the XNNPACK partitioner: the ``.pte``
    bytes and details (lowering seconds, delegation coverage)."""
    preload_triton()
    import torch

    t = time.time()
    with quiet_native() as log:
        try:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            program = torch.export.export(model, (_contiguous(example),))
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            details = {"lower_seconds": round(time.time() - t, 2), "delegation": coverage(edge)}
            return edge.to_executorch().buffer, details
        except Exception as e:  # noqa: BLE001 - torch.export and the lowering passes raise many types
            raise ExporterError(f"ExecuTorch lowering failed: {type(e).__name__}: {str(e)[:600]}\n"
                                f"{log.getvalue()[-1500:]}") from None


def _op(node) -> str:
    target = node.target
    name = getattr(target, "_name", None) or getattr(target, "__name__", None) or str(target)
    return str(name).replace("::", ".").removeprefix("aten.")


def coverage(edge) -> dict[str, Any]:
    """Delegation coverage of a lowered edge program: ``partitions`` (XNNPACK subgraphs), ``delegated`` ({op:
    count} inside them), ``fallback`` ({op: count}: nodes on the input's path left to the portable kernels),
    ``constant`` (nodes outside the delegate that read only constants)."""
    import operator

    program = edge.exported_program()
    gm = program.graph_module
    user = set(program.graph_signature.user_inputs)
    dynamic: set[str] = set()
    delegated: collections.Counter = collections.Counter()
    fallback: collections.Counter = collections.Counter()
    constant, partitions = 0, 0
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if node.name in user:
                dynamic.add(node.name)
            continue
        if any(a.name in dynamic for a in node.all_input_nodes):
            dynamic.add(node.name)
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            partitions += 1
            for inner in getattr(gm, node.name).original_module.graph.nodes:
                if inner.op == "call_function" and inner.target is not operator.getitem:
                    delegated[_op(inner)] += 1
        elif node.op == "call_function" and node.target is not operator.getitem \
                and "executorch_call_delegate" not in str(node.target):
            if node.name in dynamic:
                fallback[_op(node)] += 1
            else:
                constant += 1
    return {"backend": "XnnpackBackend", "partitions": partitions, "delegated_ops": sum(delegated.values()),
            "fallback_ops": sum(fallback.values()), "constant_ops": constant,
            "delegated": dict(sorted(delegated.items())), "fallback": dict(sorted(fallback.items()))}


def delegation_summary(details: dict[str, Any]) -> dict[str, Any]:
    """What the report and the bundle show of an export record's delegation (the per-op ``delegated`` counts stay in
    export.json)."""
    d = details.get("delegation") or {}
    return {k: d[k] for k in ("partitions", "delegated_ops", "fallback_ops", "constant_ops", "fallback") if k in d}


def fallback_text(delegation: dict[str, Any]) -> str:
    """The ops a delegation left to the portable kernels, as people read them: ``argmax x1, sum.dim_IntList x2``
    (``none``)."""
    return ", ".join(f"{op} x{n}" for op, n in delegation.get("fallback", {}).items()) or "none"


def export(model, example: np.ndarray, options: ExportOptions, out_dir: Path) -> ExportResult:
    """Write ``out_dir/model.pte``: the model lowered to ExecuTorch with the XNNPACK delegate."""
    if options.graph:
        raise ExporterError(GRAPH_REFUSAL)
    check_precision(TARGET, options)
    t0 = time.time()
    model = model.eval().cpu()
    if options.output == "argmax":
        model = class_map(model, "int32")
    details: dict[str, Any] = {"runtime": f"ExecuTorch {version()}", "input_layout": "NCHW",
                               "output": options.output}
    final = Path(out_dir) / "model.pte"
    if options.precision == "int8":
        t = time.time()
        model, n = quantized_graph(model, example, options.calibration)
        details.update(quantizer=QUANTIZER, calibration_images=n, quantize_seconds=round(time.time() - t, 2))
    buffer, lowered = lower(model, example)
    details.update(lowered)
    with atomic_path(final) as tmp:
        Path(tmp).write_bytes(buffer)
    return ExportResult("executorch", options.precision, final, path_size(final), time.time() - t0,
                        tuple(example.shape), details)


def set_threads(threads: int) -> None:
    """ExecuTorch's CPU thread pool is one per process: size it for the runner about to run."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        with quiet_native():
            portable_lib._unsafe_reset_threadpool(threads)


class PteRunner:
    """A ``.pte`` run by ExecuTorch's runtime (its XNNPACK delegate and portable kernels): NCHW float32 in, the
    file's output (logits, or an argmax file's class map) out, one image per call as the file was planned."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        preload_triton()
        set_threads(threads)  # before the delegate is initialized with the pool
        with quiet_native():
            from executorch.runtime import Runtime

            try:
                # the method reads the program's memory: the runner keeps both alive together
                self.program = Runtime.get().load_program(Path(path))
                self.method = self.program.load_method("forward")
            except Exception as e:  # noqa: BLE001 - the runtime raises RuntimeError/ValueError with its log
                raise ExporterError(f"ExecuTorch cannot load '{path}': {str(e)[:300]}") from None
        self.threads = threads
        self.runtime = f"ExecuTorch {version()} (XNNPACK delegate, portable kernels), {threads} threads"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        set_threads(self.threads)
        x = np.asarray(x, np.float32)
        return np.concatenate([self.method.execute([_contiguous(x[i : i + 1])])[0].numpy()
                               for i in range(x.shape[0])])


def load(path: Path, threads: int = 2, outputs: tuple[str, ...] = ("logits",)) -> PteRunner:
    if len(outputs) > 1:
        raise ExporterError(GRAPH_REFUSAL)
    return PteRunner(Path(path), threads)


def can_run() -> tuple[bool, str]:
    return True, ""


TARGET = Target(name="executorch", suffix=".pte", precisions=("fp32", "int8"), default_precision="fp32",
                requires=("executorch",), export=export, load=load, can_run=can_run, extra="executorch",
                graph_refusal=GRAPH_REFUSAL)


#: ExecuTorch's ScalarType codes (c10) of the tensors an exported segmentation model has
_DTYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32"}


def tensor_meta(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The ``forward`` method's input and output tensors as the file declares them: ``{"inputs": [{"shape",
    "dtype"}], "outputs": [...]}`` (what an app's Module API call must feed and gets back)."""
    with quiet_native():
        from executorch.runtime import Runtime

        meta = Runtime.get().load_program(Path(path)).metadata("forward")

    def one(t) -> dict[str, Any]:
        return {"shape": [int(s) for s in t.sizes()], "dtype": _DTYPES.get(int(t.dtype()), str(t.dtype()))}

    return {"inputs": [one(meta.input_tensor_meta(i)) for i in range(meta.num_inputs())],
            "outputs": [one(meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]}
