"""Run a ``.tflite`` inside the emulated aarch64 Python (see :mod:`exporters.arm64`): numpy and LiteRT only.

``python3 arm64_worker.py MODEL INPUTS.npz OUT.npz KERNELS THREADS``: INPUTS.npz holds ``x``, the model-ready
batch ([N, H, W, C] in the input tensor's dtype); for every kernel path in KERNELS (comma-separated from
xnnpack, builtin, reference) the interpreter runs each image and OUT.npz gets ``y_<kernel>`` (the raw output
tensor, batch-stacked) and ``info``, a JSON string: the machine and CPU features the interpreter really saw
(``platform.machine()``, /proc/cpuinfo's feature flags as the emulator presents them), the LiteRT version and the
seconds each path took. The file is written to ``OUT.npz.tmp`` and renamed, so a crash leaves no output.
"""

import json
import os
import platform
import sys
import time


def cpu_features() -> list:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("features"):
                    return sorted(line.split(":", 1)[1].split())
    except OSError:
        pass
    return []


def main(argv) -> int:
    model, inputs, out, kernels, threads = argv[1], argv[2], argv[3], argv[4].split(","), int(argv[5])
    import numpy as np
    import ai_edge_litert
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # the mapping of exporters.tflite.interpreter, repeated: this file cannot import exporters (torch is not here)
    resolvers = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                 "reference": OpResolverType.BUILTIN_REF}
    x = np.load(inputs)["x"]
    arrays = {}
    info = {"machine": platform.machine(), "cpu_features": cpu_features(), "qemu_cpu": os.environ.get("QEMU_CPU", ""),
            "python": platform.python_version(), "litert": getattr(ai_edge_litert, "__version__", ""),
            "seconds": {}}
    for kernel in kernels:
        t0 = time.time()
        interp = Interpreter(model_path=model, num_threads=threads, experimental_op_resolver_type=resolvers[kernel])
        interp.allocate_tensors()
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
        ys = []
        for i in range(x.shape[0]):
            interp.set_tensor(inp["index"], np.ascontiguousarray(x[i:i + 1]))
            interp.invoke()
            ys.append(interp.get_tensor(outp["index"]).copy())
        arrays["y_" + kernel] = np.concatenate(ys)
        info["seconds"][kernel] = round(time.time() - t0, 2)
    tmp = out + ".tmp.npz"
    np.savez(tmp, info=np.array(json.dumps(info)), **arrays)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
