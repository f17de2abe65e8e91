"""ExecuTorch target: PyTorch's on-device runtime (``.pte``), every op it can place on the XNNPACK delegate.

The route: ``torch.export`` (eval, NCHW float input as the model takes it) -> edge dialect -> XNNPACK partitioner
(``to_edge_transform_and_lower``) -> ``.pte``. No ONNX and no layout translation: the file computes the PyTorch
graph. Precisions:

* ``fp32``: the float graph, XNNPACK's float kernels.
* ``int8``: XNNPACK's own PT2E quantizer (``XNNPACKQuantizer``, symmetric per-channel int8 weights, per-tensor int8
  activations), ranges observed on ``options.calibration`` (the run's calibration images), ``convert_pt2e``; the
  delegate runs each ``dequantize -> op -> quantize`` as its int8 kernel.

Measured on the quickstart's LR-ASPP (128 px): NCHW input lowers to one XNNPACK partition; an NHWC-input wrapper
(what the TFLite files take) split it into ten partitions and ran slower (6.2 vs 5.0 ms), so the file keeps the
model's own NCHW input, as ExecuTorch's Android/iOS tensor helpers make it. BatchNorm is folded into the
convolutions by the delegate's passes (float) or by ``prepare_pt2e`` (int8).

Every export records its **delegation coverage** (:func:`coverage`): partitions, the ops run by XNNPACK, the
compute ops left to ExecuTorch's portable kernels (the silent fallback users meet on the phone) and the nodes that
only touch constants (copies of scalar constants, computed once). Files are run by ExecuTorch's own runtime
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

#: what a multi-output graph (Mask R-CNN's) cannot be here, measured: see :func:`export`
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


def _quantize(model, example, calibration: Sequence[np.ndarray]):
    """``model`` captured by ``torch.export`` and quantized with XNNPACK's PT2E quantizer on ``calibration``."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    imgs = batches(calibration)
    if not imgs:
        raise ExporterError("ExecuTorch int8 needs calibration images; none were given")
    graph = torch.export.export(model, (example,)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for b in imgs:
            prepared(_contiguous(b))
    return convert_pt2e(prepared), len(imgs)


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


def export(model, example: np.ndarray, options: ExportOptions, out_dir: Path) -> ExportResult:
    """Write ``out_dir/model.pte``: the model lowered to ExecuTorch with the XNNPACK delegate."""
    if options.graph:
        raise ExporterError(GRAPH_REFUSAL)
    check_precision(TARGET, options)
    t0 = time.time()
    preload_triton()
    import torch

    model = model.eval().cpu()
    if options.output == "argmax":
        model = class_map(model, "int32")
    x = _contiguous(example)
    details: dict[str, Any] = {"runtime": f"ExecuTorch {version()}", "input_layout": "NCHW",
                               "output": options.output}
    final = Path(out_dir) / "model.pte"
    with quiet_native() as log:
        try:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            if options.precision == "int8":
                t = time.time()
                model, n = _quantize(model, x, options.calibration)
                details.update(quantizer="XNNPACKQuantizer (PT2E): int8 weights symmetric per channel, int8 "
                                         "activations per tensor", calibration_images=n,
                               quantize_seconds=round(time.time() - t, 2))
            t = time.time()
            program = torch.export.export(model, (x,))
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            details["lower_seconds"] = round(time.time() - t, 2)
            details["delegation"] = coverage(edge)
            buffer = edge.to_executorch().buffer
        except ExporterError:
            raise
        except Exception as e:  # noqa: BLE001 - torch.export and the lowering passes raise many types
            raise ExporterError(f"ExecuTorch lowering failed: {type(e).__name__}: {str(e)[:600]}\n"
                                f"{log.getvalue()[-1500:]}") from None
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
        with quiet_native():
            from executorch.runtime import Runtime

            try:
                self.method = Runtime.get().load_program(Path(path)).load_method("forward")
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
