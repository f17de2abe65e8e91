"""ONNX target: torch's TorchScript-based exporter (opset 17), run with onnxruntime.

int8 is QDQ ONNX (QuantizeLinear/DequantizeLinear around every quantized op, standard opset ops only): NNCF
post-training quantization on the PyTorch model (calibrated on ``options.calibration``), or the quantizers an
already-quantized model carries (``options.quantized``: ``edgeseg quantize`` hands over PTQ/QAT models).

The legacy exporter (``dynamo=False``) is used because it is fast (< 1 s), deterministic and was
measured to match PyTorch to 8e-6 on edgeseg's architectures; the graph it writes is also what
onnx2tf converts best.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from exporters.atomic import atomic_path
from exporters.base import ExporterError, ExportOptions, ExportResult, Target, check_precision, path_size

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def write_onnx(model, example: np.ndarray, path: Path) -> None:
    """Export ``model`` (eval mode, CPU) to ``path`` with a fixed input shape."""
    import torch

    model = model.eval().cpu()
    x = torch.from_numpy(np.asarray(example, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
                # a TorchScript module inside the model (edgeseg import torchscript:...): the exporter's own trace
                # refuses it ("not part of the active trace"); a trace of the whole model exports
                model = torch.jit.trace(model, x)
            torch.onnx.export(model, (x,), str(path),
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSET,
                              dynamo=False, do_constant_folding=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types; name the step and keep the text (the op)
            raise ExporterError(f"PyTorch -> ONNX export failed: {str(e)[:500]}") from e


def constants_as_initializers(path: Path) -> None:
    """Rewrite ``path`` with its ``Constant`` nodes' tensors as graph initializers (same values, same graph).

    onnx2tf decides whether an op's axes need the NCHW -> NHWC remapping from its inputs, and counts a
    Constant node as an untransposed tensor: a Slice whose starts/ends/axes come from Constant nodes (what the
    TorchScript exporter writes for ``y[:, :, :h]``) cuts the wrong NHWC axis. Initializers are remapped.
    """
    import onnx

    m = onnx.load(str(path))
    keep = []
    for n in m.graph.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            m.graph.initializer.append(t)
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    onnx.save(m, str(path))


def fold_constants(path: Path) -> None:
    """Rewrite ``path`` with the subgraphs that compute constants (``Unsqueeze`` of a constant, ``Cast``,
    arithmetic on initializers) replaced by their values: onnxscript's constant folder, nothing else.

    Same reason as :func:`constants_as_initializers`, one step further: a Slice whose starts/ends are computed
    from constants (what a graph translated from ONNX by onnx2torch exports, edgeseg import onnx:) is also
    cut on the wrong NHWC axis by onnx2tf unless its inputs are initializers.
    """
    import onnx
    import onnxscript.optimizer

    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))  # static shapes known: a Shape op folds too
    onnxscript.optimizer.fold_constants(m)
    onnxscript.optimizer.remove_unused_nodes(m)
    onnx.save(m, str(path))


def op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each (domain-qualified) type the ONNX file holds: proof of what it computes."""
    import onnx

    counts: dict[str, int] = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        key = f"{n.domain}:{n.op_type}" if n.domain else n.op_type
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def fold_weight_quantization(path: Path) -> int:
    """Store quantized weights as int8 initializers: each ``QuantizeLinear`` whose input is a constant weight is
    computed once (ONNX's formula: saturate(round_half_even(w / scale) + zero_point)) and removed, so the file holds
    int8 weights feeding ``DequantizeLinear`` (4x smaller) and computes exactly what it computed before.
    Returns how many weights were folded."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    # torch writes shared parameters as Identity(initializer): make those outputs initializers of their own
    aliases = [n for n in g.node if n.op_type == "Identity" and n.input[0] in inits]
    for n in aliases:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[n.input[0]])
        copy.name = n.output[0]
        g.initializer.append(copy)
        inits[copy.name] = copy
    if aliases:
        rest = [n for n in g.node if n not in aliases]
        del g.node[:]
        g.node.extend(rest)
    consumers: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            consumers[name] = consumers.get(name, 0) + 1
    folded, keep = 0, []
    for n in g.node:
        if (n.op_type == "QuantizeLinear" and len(n.input) == 3 and all(i in inits for i in n.input)
                and consumers.get(n.input[0], 0) == 1):
            w = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            zero = numpy_helper.to_array(inits[n.input[2]])
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * w.ndim
                shape[axis] = scale.size
                scale, zp = scale.reshape(shape), zero.reshape(shape).astype(np.float32)
            else:
                zp = zero.astype(np.float32)
            info = np.iinfo(zero.dtype)
            q = np.clip(np.rint(w / scale) + zp, info.min, info.max).astype(zero.dtype)
            g.initializer.append(numpy_helper.from_array(q, n.output[0]))
            folded += 1
            continue
        keep.append(n)
    if folded or aliases:
        del g.node[:]
        g.node.extend(keep)
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        live = [i for i in g.initializer if i.name in used]
        del g.initializer[:]
        g.initializer.extend(live)
        onnx.save(m, str(path))
    return folded


def export(model, example: np.ndarray, options: ExportOptions, out_dir: Path) -> ExportResult:
    """Write ``out_dir/model.onnx`` (fp32, or int8 QDQ; a multi-output graph: fp32 with its output names)."""
    check_precision(TARGET, options)
    t0 = time.time()
    final = Path(out_dir) / "model.onnx"
    if options.graph:
        details = _write_graph(model, example, final, options.outputs)
        return ExportResult("onnx", options.precision, final, path_size(final), time.time() - t0,
                            tuple(example.shape), details)
    details: dict[str, object] = {"opset": OPSET, "exporter": "torch.onnx (TorchScript-based)"}
    if options.precision == "int8":
        from exporters.nncf_tools import int8_model

        model = int8_model(model, example, options, details)
    with atomic_path(final) as tmp:
        write_onnx(model, example, tmp)
        if options.precision == "int8":
            details["int8_weights"] = fold_weight_quantization(tmp)
        details["ops"] = op_counts(tmp)
    if options.precision == "int8":
        custom = [k for k in details["ops"] if ":" in k]  # type: ignore[union-attr]
        if custom:  # onnxruntime would refuse the file: never hand it out
            raise ExporterError(f"the int8 ONNX graph kept non-standard ops {custom}; onnxruntime cannot run it")
    return ExportResult("onnx", options.precision, final, path_size(final), time.time() - t0, tuple(example.shape),
                        details)


def load(path: Path, threads: int = 2, outputs: tuple[str, ...] = ("logits",)):
    """onnxruntime on the file: logits (one output) or ``{name: array}`` (several ``outputs``)."""
    if len(outputs) > 1:
        return GraphRunner(Path(path), outputs, threads)
    return OnnxRunner(Path(path), threads)


def can_run() -> tuple[bool, str]:
    return True, ""


class OnnxRunner:
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int = 2) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExporterError(f"onnxruntime cannot load '{path}': {str(e)[:300]}") from None
        self.input = self.session.get_inputs()[0]
        self.runtime = f"onnxruntime {ort.__version__} CPU, {threads} threads"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        # the exported graph has a fixed batch of 1 (what a phone runs)
        return np.concatenate([self.session.run(None, {self.input.name: x[i : i + 1]})[0]
                               for i in range(x.shape[0])])


TARGET = Target(name="onnx", suffix=".onnx", precisions=("fp32", "int8"), default_precision="fp32",
                requires=("onnx", "onnxruntime"), export=export, load=load, can_run=can_run,
                graph_precisions=("fp32",))


def _write_graph(module, example: np.ndarray, path: Path, output_names: tuple[str, ...]) -> dict:
    """A multi-output graph as fp32 ONNX with named outputs; returns details."""
    import torch

    t0 = time.time()
    with atomic_path(Path(path)) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module.eval().cpu(), (torch.from_numpy(np.asarray(example, np.float32)),), str(tmp),
                              input_names=[INPUT_NAME], output_names=list(output_names), opset_version=OPSET,
                              dynamo=False, do_constant_folding=True)
        except Exception as e:  # noqa: BLE001 - the exporter raises many types
            raise ExporterError(f"ONNX export of the graph failed: {type(e).__name__}: {str(e)[:500]}") from None
    return {"converter": f"torch.onnx (TorchScript exporter, opset {OPSET})",
            "convert_seconds": round(time.time() - t0, 2), "ops": op_counts(Path(path))}


class GraphRunner:
    """onnxruntime on a multi-output graph: NCHW float32 in, ``{output name: array}`` out."""

    def __init__(self, path: Path, outputs: tuple[str, ...], threads: int = 2) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExporterError(f"onnxruntime cannot load '{path}': {str(e)[:300]}") from None
        self.input = self.session.get_inputs()[0].name
        self.names = tuple(o.name for o in self.session.get_outputs())
        if self.names != tuple(outputs):
            raise ExporterError(f"'{path}' has the outputs {', '.join(self.names)}, not {', '.join(outputs)}")
        self.runtime = f"onnxruntime {ort.__version__} (CPU), {threads} threads"

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(None, {self.input: np.ascontiguousarray(np.asarray(x, np.float32))})
        return dict(zip(self.names, outs))
