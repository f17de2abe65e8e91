"""What every int8 route writes: the export record and parity.json of a quantized file, its line in
``quantize-<method>.json``, and parity of a fake-quantized PyTorch model."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgeseg.core.atomic import write_json
from edgeseg.core.digest import file_digest
from edgeseg.tasks.semantic.parity import ParityResult, compare


def torch_parity(model, reference, images, masks, ckpt, thresholds,
                  runtime: str = "PyTorch with NNCF fake quantization") -> ParityResult:
    from edgeseg.core.latency import torch_runner

    return compare(reference, torch_runner(model, 2), images, masks, ckpt.class_names, thresholds, "pytorch",
                   "int8-fake-quant", runtime=runtime)


def summary_row(rec: dict, parity: ParityResult, details: dict) -> dict:
    """One export's line in ``quantize-<method>.json``."""
    return {"size_bytes": rec["size_bytes"], "pixel_agreement": parity.pixel_agreement, "mask_miou": parity.mask_miou,
            "exported_miou": parity.exported_miou, "reference_miou": parity.reference_miou,
            "miou_drop": parity.miou_drop, "worst_class": parity.worst_class, "status": parity.status,
            "details": details}


def write_record(run: Path, out: Path, res_json: dict, parity: ParityResult, extra: dict) -> dict:
    from edgeseg.core.versions import package_versions

    ckpt_path = run / "checkpoint.pt"
    record = {"schema": "edgeseg.export/1", **res_json, "path": str(Path(res_json["path"]).relative_to(run)),
              "checkpoint": "checkpoint.pt", "checkpoint_digest": file_digest(ckpt_path), **extra,
              "versions": package_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(out / "parity.json", {"schema": "edgeseg.parity/1", **parity.to_json()})
    write_json(out / "export.json", record)
    return record


def memo(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The reference's logits computed once per distinct batch: the search checks the same images many times."""
    cache: dict[bytes, np.ndarray] = {}

    def run(x: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=16).digest()
        if key not in cache:
            cache[key] = fn(x)
        return cache[key]

    return run


def rank_subset(images, masks, labels, count: int) -> tuple[list, list, list | None]:
    """``count`` evenly spaced validation samples (all if fewer): the split a search's sensitivity pass ranks its
    candidates on; ``labels`` None stays None."""
    pick = np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int)
    return ([images[i] for i in pick], [masks[i] for i in pick],
            None if labels is None else [labels[i] for i in pick])
