"""Latency measurement: warm-up, then N timed runs; median / p90 / min, with the runtime named."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def measure_latency(fn: Callable[[np.ndarray], object], x: np.ndarray, runs: int = 20,
                    warmup: int = 3) -> dict[str, float]:
    """Time ``fn(x)`` ``runs`` times after ``warmup`` calls; figures in milliseconds."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1000.0)
    a = np.asarray(times)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "mean_ms": float(a.mean()), "runs": runs, "warmup": warmup}


def torch_runner(model, threads: int = 2) -> Callable[[np.ndarray], np.ndarray]:
    """The PyTorch reference as a NCHW numpy -> logits numpy function (CPU, eval, no grad)."""
    import torch

    model = model.eval().cpu()

    def run(x: np.ndarray) -> np.ndarray:
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                return model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
        finally:
            torch.set_num_threads(prev)

    return run
