"""Package and hardware versions recorded with every checkpoint, export and latency figure."""

from __future__ import annotations

import importlib.metadata
import os
import platform

PACKAGES = ("edgeseg", "torch", "torchvision", "numpy", "onnx", "onnxruntime", "onnx2tf", "ai-edge-quantizer",
            "ai-edge-litert", "coremltools", "nncf", "mediapipe", "executorch")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def hardware() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version()}
