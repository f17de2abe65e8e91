"""``edgeseg bench MODEL``: size, I/O, parameters and latency of any model file, edgeseg-made or not.

Parameters are counted for checkpoints (with MACs); for ``.tflite``/``.onnx`` files the elements of
their constant tensors are reported instead (biases, folded BatchNorm and quantization tensors included).

Accepts ``.tflite`` (LiteRT, XNNPACK on and off), ``.onnx`` (onnxruntime), ``.mlpackage`` (the Core ML
runtime on macOS on CPU_ONLY and ALL; elsewhere edgeseg's reference execution of the saved program is timed and
marked ``reference-execution`` — a figure for comparing packages on this CPU, not a device's speed) and edgeseg
checkpoints or run directories (PyTorch eager). Latency: median / p90 / min
over ``runs`` after ``warmup`` at each thread count, with the hardware and runtime versions recorded.
Memory: the process's resident-set growth while loading and running each configuration.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.core.latency import measure_latency
from edgeseg.core.errors import UsageError
from edgeseg.core.versions import hardware, package_versions

SCHEMA = "edgeseg.bench/1"


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _kind(path: Path) -> str:
    if path.suffix == ".tflite":
        return "tflite"
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".mlpackage":
        return "coreml"
    if path.suffix == ".pt" or (path.is_dir() and (path / "checkpoint.pt").exists()):
        return "pytorch"
    raise UsageError(f"MODEL '{path}' is not a .tflite, .onnx, .mlpackage, checkpoint .pt or run directory")


def _size(path: Path) -> int:
    from exporters.base import path_size

    return path_size(path / "checkpoint.pt" if path.is_dir() and path.suffix != ".mlpackage" else path)


def _tflite_io(path: Path) -> tuple[dict, int]:
    from exporters.tflite import interpreter

    interp = interpreter(path, 1)

    def desc(d):
        q = d.get("quantization", (0.0, 0))
        return {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                **({"quantization": {"scale": float(q[0]), "zero_point": int(q[1])}} if q and q[0] else {})}

    inputs, outputs = [desc(d) for d in interp.get_input_details()], [desc(d) for d in interp.get_output_details()]
    io_index = {d["index"] for d in interp.get_input_details() + interp.get_output_details()}
    params = 0
    for t in interp.get_tensor_details():  # constant tensors (weights): those with data and not I/O
        if t["index"] in io_index:
            continue
        try:
            data = interp.get_tensor(t["index"])
        except ValueError:  # intermediate tensors have no data before invoke
            continue
        if data.size and t["name"] and not t["name"].startswith("serving_default"):
            params += int(data.size)
    return {"inputs": inputs, "outputs": outputs}, params


def _onnx_io(path: Path) -> tuple[dict, int]:
    import onnx

    m = onnx.load(str(path))
    init = {i.name for i in m.graph.initializer}

    def desc(v):
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(
            v.type.tensor_type.elem_type).name}

    params = sum(int(np.prod(i.dims)) for i in m.graph.initializer)
    return ({"inputs": [desc(v) for v in m.graph.input if v.name not in init],
             "outputs": [desc(v) for v in m.graph.output]}, params)


def _coreml_io(path: Path) -> tuple[dict, int | None]:
    from exporters.coreml_tools import import_ct

    ct = import_ct()
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()

    def desc(f):
        t = f.type.WhichOneof("Type")
        if t == "imageType":
            return {"name": f.name, "kind": "image", "shape": [1, 3, f.type.imageType.height, f.type.imageType.width]}
        shape = list(f.type.multiArrayType.shape)
        return {"name": f.name, "kind": t, "shape": shape}

    return {"inputs": [desc(f) for f in spec.description.input],
            "outputs": [desc(f) for f in spec.description.output]}, None


def bench_model(path: Path | str, threads: tuple[int, ...] = (1, 2, 4), runs: int = 20, warmup: int = 3,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Everything ``edgeseg bench`` prints, as a JSON-ready dict (schema ``edgeseg.bench/1``)."""
    from exporters import ExporterError

    path = Path(path)
    if not path.exists():
        raise UsageError(f"MODEL '{path}' does not exist")
    if runs < 1 or warmup < 0 or not threads or min(threads) < 1:
        raise UsageError("--runs must be >= 1, --warmup >= 0 and --threads positive integers")
    kind = _kind(path)
    out: dict[str, Any] = {"schema": SCHEMA, "model": str(path), "format": kind, "size_bytes": _size(path),
                           "hardware": hardware(), "versions": package_versions(), "latency": []}
    configs: list[tuple[str, int, Callable[[], Any]]] = []
    if kind == "tflite":
        from exporters.tflite import TFLiteRunner

        out["io"], out["constant_elements"] = _tflite_io(path)
        for t in threads:
            for xnn in (True, False):
                configs.append((f"xnnpack={'on' if xnn else 'off'}", t,
                                lambda t=t, xnn=xnn: TFLiteRunner(path, t, "xnnpack" if xnn else "builtin")))
    elif kind == "onnx":
        from exporters.onnx import OnnxRunner

        out["io"], out["constant_elements"] = _onnx_io(path)
        configs = [("", t, lambda t=t: OnnxRunner(path, t)) for t in threads]
    elif kind == "coreml":
        from exporters.coreml import CoreMLRunner, native_runtime

        out["io"], _ = _coreml_io(path)
        if native_runtime():
            configs = [(u, 0, lambda u=u: CoreMLRunner(path, u)) for u in ("CPU_ONLY", "ALL")]
        else:
            from exporters.coreml_reference import ReferenceRunner

            # timed, and marked: PyTorch kernels running the saved program on this CPU, not a device's Core ML
            out["latency_note"] = ("the Core ML runtime needs macOS; these figures time edgeseg's reference "
                                   "execution of the saved program on this CPU, not a device")
            configs = [("reference-execution", t, lambda t=t: ReferenceRunner(path, t)) for t in threads]
    else:
        from edgeseg.core.latency import torch_runner
        from edgeseg.models import count_params
        from edgeseg.models.macs import count_macs
        from edgeseg.train.checkpoint import load_checkpoint

        ck = load_checkpoint(path)
        model = ck.build_model()
        pre = ck.preprocess
        out["io"] = {"inputs": [{"name": "x", "shape": [1, 3, pre.height, pre.width], "dtype": "float32",
                                 "normalization": {"mean": list(pre.mean), "std": list(pre.std)}}],
                     "outputs": [{"name": "logits", "shape": [1, ck.num_classes, pre.height, pre.width],
                                  "dtype": "float32", "classes": list(ck.class_names)}]}
        out["params"] = count_params(model)
        import torch

        out["macs"] = count_macs(model, torch.zeros(1, 3, pre.height, pre.width))
        configs = [("eager", t, lambda t=t: _Torch(torch_runner(model, t), t)) for t in threads]
    for label, t, make in configs:
        gc.collect()
        before = _rss_mb()
        try:
            runner = make()
        except ExporterError as e:
            out["latency"].append({"threads": t, "config": label, "error": str(e).splitlines()[0]})
            continue
        shape = _input_shape(out["io"])
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        log(f"timing {kind} {label} threads={t} ({runs} runs after {warmup} warm-up) ...")
        lat = measure_latency(runner, x, runs, warmup)
        out["latency"].append({"threads": t, "config": label, "runtime": getattr(runner, "runtime", kind), **lat,
                               "rss_growth_mb": round(_rss_mb() - before, 1)})
        del runner
    return out


class _Torch:
    def __init__(self, fn, threads: int) -> None:
        import torch

        self.fn, self.runtime = fn, f"PyTorch {torch.__version__} eager CPU, {threads} threads"

    def __call__(self, x):
        return self.fn(x)


def _input_shape(io: dict) -> tuple[int, int, int, int]:
    """NCHW shape the runners take, from the first input (TFLite's is NHWC)."""
    shape = [int(s) if isinstance(s, (int, np.integer)) and int(s) > 0 else 1 for s in io["inputs"][0]["shape"]]
    if len(shape) != 4:
        raise UsageError(f"edgeseg bench times image models with one 4-D input; this one has shape {shape}")
    n, a, b, c = shape
    if c in (1, 3, 4) and a not in (1, 3, 4):  # NHWC (TFLite)
        return (n, c, a, b)
    return (n, a, b, c)


def format_bench(r: dict[str, Any]) -> str:
    lines = [f"{r['model']} ({r['format']}, {r['size_bytes'] / 1e6:.2f} MB"
             + (f", {r['params'] / 1e6:.2f} M params" if r.get("params") else "")
             + (f", {r['constant_elements'] / 1e6:.2f} M constant tensor elements" if r.get("constant_elements")
                else "")
             + (f", {r['macs'] / 1e9:.3f} GMACs" if r.get("macs") else "") + ")"]
    for side in ("inputs", "outputs"):
        for d in r["io"][side]:
            extra = f" {d['dtype']}" if "dtype" in d else f" {d.get('kind', '')}"
            q = d.get("quantization")
            lines.append(f"  {side[:-1]:6s} {d['name']}: {d['shape']}{extra}"
                         + (f" (scale {q['scale']:.4g}, zero point {q['zero_point']})" if q else ""))
    if r.get("latency_note"):
        lines.append(f"  latency {r['latency_note']}")
    for row in r["latency"]:
        if "error" in row:
            lines.append(f"  threads {row['threads']} {row['config']}: {row['error']}")
            continue
        lines.append(f"  threads {row['threads']} {row['config']:12s} median {row['median_ms']:8.2f} ms  "
                     f"p90 {row['p90_ms']:8.2f}  min {row['min_ms']:8.2f}  RSS +{row['rss_growth_mb']:.0f} MB")
    hw = r["hardware"]
    lines.append(f"  on {hw.get('cpu', '?')} ({hw.get('cores', '?')} cores), {hw.get('system', '')}")
    return "\n".join(lines)
