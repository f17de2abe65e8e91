"""Reference (PyTorch) vs exported model on the same preprocessed tensors -> numbers, not a bool."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from edgeseg.core.metrics import confusion, iou_per_class, mean_iou
from edgeseg.core.mixed_precision import Judge

# Default thresholds per precision: minimum pixel agreement (%) and minimum mask mIoU vs reference, and for every
# precision the task figures: the dataset mIoU (against the labels) may drop by at most 1 point (0.01) from the
# PyTorch model's to the export's, and no single class's IoU by more than 2 points (0.02). The class gate's
# default is measured (docs/export-and-parity.md "Per-class gate"): on the quickstart every export's worst class
# moves by < 0.1 point; on CamVid the TF Lite converter's int8 loses 1.24 points on its worst class (Pavement)
# and aeq's full int8 3.59 (Bicyclist) — 2 points fails the damaged class and keeps the converter's file.
DEFAULT_MAX_MIOU_DROP = 0.01
DEFAULT_MAX_CLASS_DROP = 0.02
_TASK = {"max_miou_drop": DEFAULT_MAX_MIOU_DROP, "max_class_drop": DEFAULT_MAX_CLASS_DROP}
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"min_agreement": 99.9, **_TASK},
    "fp16": {"min_agreement": 99.5, **_TASK},
    "int8": {"min_agreement": 98.0, "min_mask_miou": 0.95, **_TASK},
    "palettize6": {"min_agreement": 98.0, "min_mask_miou": 0.95, **_TASK},
}

PASSED, FAILED, NOT_VERIFIED = "passed", "failed", "not-verified"

# Mask mIoU leaves out a class that reference and export together show on fewer than this share of the compared
# pixels (1 in 10,000: 6.5 pixels per 256 x 256 image): its IoU is a coin toss over a handful of pixels and would
# swing the mean by 1 / (number of classes). Measured: an LR-ASPP that never learned one class (IoU 0.005 against
# the labels) showed it on 2 of 65,536 reference pixels; int8 on none: mask mIoU 0.77 with every class within
# 0.6 point of PyTorch against the labels. Such classes are listed in ``mask_miou_ignored`` with their pixels;
# the per-class gate (against the labels) still covers them.
MIN_MASK_SHARE = 1e-4


def mask_miou(cm_pair: np.ndarray, class_names: Sequence[str]) -> tuple[float, dict[str, dict[str, int]]]:
    """Mean IoU of the exported masks against the reference's (rows: reference, columns: export), over the classes
    shown on at least :data:`MIN_MASK_SHARE` of the pixels; also the classes left out, with their pixel counts."""
    ref, exp, both = cm_pair.sum(1), cm_pair.sum(0), np.diag(cm_pair)
    union = ref + exp - both
    rare = (union > 0) & (union < MIN_MASK_SHARE * cm_pair.sum())
    ignored = {class_names[c]: {"reference_pixels": int(ref[c]), "exported_pixels": int(exp[c])}
               for c in np.flatnonzero(rare)}
    return mean_iou(cm_pair, skip=rare), ignored


@dataclass
class ParityResult:
    """Parity figures of one exported model against its PyTorch reference.

    ``status`` is ``passed`` or ``failed`` when the exported model ran, and ``not-verified`` when it
    could not run here (``reason`` says why); a not-verified result is never a pass.
    """

    target: str
    precision: str
    status: str
    runtime: str = ""
    #: what the export was compared with: PyTorch, or onnxruntime on the original file of an ONNX import
    reference: str = "PyTorch"
    images: int = 0
    pixel_agreement: float | None = None
    mask_miou: float | None = None
    max_abs_logit_diff: float | None = None
    reference_miou: float | None = None
    exported_miou: float | None = None
    #: reference_miou - exported_miou: what the export costs the task (positive = worse than PyTorch)
    miou_drop: float | None = None
    iou_change: dict[str, float | None] = field(default_factory=dict)
    #: every class's IoU against the labels, PyTorch's and the export's (None: the class is in neither mask nor
    #: labels), where the task figures are measured
    reference_class_iou: dict[str, float | None] = field(default_factory=dict)
    exported_class_iou: dict[str, float | None] = field(default_factory=dict)
    #: the class whose IoU fell most (``{"name", "reference_iou", "exported_iou", "change"}``), None without labels
    worst_class: dict[str, Any] | None = None
    #: where the dataset figures (reference/exported mIoU, drop, IoU change) are measured: ``label`` = each
    #: label file's own size, the exported mask mapped back as an app does (published benchmarks' way);
    #: ``model`` = the model's input size. Parity (agreement, mask mIoU) is always at the model's size.
    task_resolution: str = "model"
    #: the dataset mIoU at the model's size too, when the task figures are at the label's
    model_resolution_miou: dict[str, float] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    reason: str = ""
    #: one entry per runtime when a check ran several (Core ML's compute units on macOS)
    by_runtime: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: classes mask mIoU leaves out (shown on fewer than :data:`MIN_MASK_SHARE` of the pixels), with their pixels
    mask_miou_ignored: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def thresholds_for(precision: str, min_agreement: float | None = None, min_mask_miou: float | None = None,
                   max_miou_drop: float | None = None, max_class_drop: float | None = None) -> dict[str, float]:
    """The gate of one export: the precision's defaults, overridden by the values given (``None``: default)."""
    from edgeseg.core.errors import UsageError

    given = {"min_agreement": min_agreement, "min_mask_miou": min_mask_miou, "max_miou_drop": max_miou_drop,
             "max_class_drop": max_class_drop}
    for key, v in given.items():
        hi = 100.0 if key == "min_agreement" else 1.0
        if v is not None and not (math.isfinite(v) and 0 <= v <= hi):
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"{flag} must be between 0 and {hi:g}, got {v}"
                             + (" (an absolute IoU drop: 0.01 is one point)" if key.endswith("_drop") else ""))
    t = dict(DEFAULT_THRESHOLDS.get(precision, DEFAULT_THRESHOLDS["int8"]))
    t.update({k: float(v) for k, v in given.items() if v is not None})
    return t


def worst_class(reference: dict[str, float | None], exported: dict[str, float | None]) -> dict[str, Any] | None:
    """The class whose IoU against the labels fell most from ``reference`` to ``exported`` (ties: the first in
    class order); None when no class has both."""
    pairs = [(exported[k] - reference[k], k) for k in reference
             if reference.get(k) is not None and exported.get(k) is not None]
    if not pairs:
        return None
    change, name = min(pairs, key=lambda p: p[0])
    return {"name": name, "reference_iou": reference[name], "exported_iou": exported[name], "change": change}


def compare(reference: Callable[[np.ndarray], np.ndarray], exported: Callable[[np.ndarray], np.ndarray],
            images: Sequence[np.ndarray], masks: Sequence[np.ndarray], class_names: Sequence[str],
            thresholds: dict[str, float], target: str, precision: str, runtime: str = "",
            batch: int = 8, labels: Sequence[np.ndarray] | None = None,
            to_label: Callable[[np.ndarray, int, int], np.ndarray] | None = None,
            region: Callable[[int, int], np.ndarray] | None = None,
            reference_runtime: str = "PyTorch") -> ParityResult:
    """Run both models over ``images`` (normalized NCHW float32, one per item) and compare.

    Parity is measured at the model's size. With ``labels`` (the label maps at their own size) and
    ``to_label(mask, h, w)`` (the model-size mask mapped back onto that frame, as an app does:
    :meth:`~edgeseg.data.transforms.Preprocess.to_label`), the dataset figures are measured at the labels'
    size; ``masks`` (the labels at the model's size) still give ``model_resolution_miou``. With ``region(h, w)``
    (where an ``h x w`` frame lands in the input: :meth:`~edgeseg.data.transforms.Preprocess.region`) parity
    counts only those pixels, not letterbox padding.

    Streams in batches, so memory stays bounded by ``batch`` images whatever the split size: ``images`` and
    ``masks`` may be lazy sequences (:class:`LazySamples`) that read each sample only when asked. A sample that
    cannot be read (edgeseg's ``DataError``, which names the file) stops the comparison there: the result keeps
    the figures of every image before it, fails, and says which image stopped it.
    """
    from edgeseg.core.errors import DataError

    n_cls = len(class_names)
    cm_pair = np.zeros((n_cls, n_cls), np.int64)     # reference mask vs exported mask
    cm_ref = np.zeros((n_cls, n_cls), np.int64)      # ground truth vs reference
    cm_exp = np.zeros((n_cls, n_cls), np.int64)      # ground truth vs exported
    at_label = labels is not None and to_label is not None
    cm_ref_l = np.zeros((n_cls, n_cls), np.int64)    # the same two at the labels' own size
    cm_exp_l = np.zeros((n_cls, n_cls), np.int64)
    agree, total, max_diff = 0, 0, 0.0
    logits_compared = True
    done, stopped = 0, ""
    for start in range(0, len(images), batch):
        xs, ys, ls = [], [], []
        for i in range(start, min(start + batch, len(images))):
            try:
                xs.append(images[i])
                ys.append(masks[i])
                if at_label:
                    ls.append(labels[i])
            except DataError as err:
                del xs[len(ys):]  # an image read without its mask
                stopped = f"stopped at image {i + 1} of {len(images)}: {err}"
                break
        if not xs:
            break
        x = np.stack(xs).astype(np.float32)
        y = np.stack(ys)
        done += len(xs)
        r, e = reference(x), exported(x)
        class_map = e.ndim == r.ndim - 1  # an in-graph argmax model returns the mask itself
        if (e.shape != r.shape) and not (class_map and e.shape == r.shape[:1] + r.shape[2:]):
            raise ValueError(f"exported model output {e.shape} differs from reference {r.shape}")
        if class_map:
            logits_compared = False
        else:
            diff = np.abs(r - e)
        rm, em = r.argmax(1), (e.astype(np.int64) if class_map else e.argmax(1))
        for k in range(len(rm)):
            # only the frame's pixels: letterbox padding is cut away before anyone sees a mask
            sel = region(*ls[k].shape) if at_label and region is not None else slice(None)
            agree += int((rm[k][sel] == em[k][sel]).sum())
            total += int(rm[k][sel].size)
            cm_pair += confusion(rm[k][sel], em[k][sel], n_cls)
            if not class_map:
                max_diff = max(max_diff, float(diff[k][:, sel].max()))
        cm_ref += confusion(y, rm, n_cls)
        cm_exp += confusion(y, em, n_cls)
        for k, lab in enumerate(ls):
            cm_ref_l += confusion(lab, to_label(rm[k], *lab.shape), n_cls)
            cm_exp_l += confusion(lab, to_label(em[k], *lab.shape), n_cls)
        if stopped:
            break
    model_res = {"reference_miou": mean_iou(cm_ref), "exported_miou": mean_iou(cm_exp)} if at_label else None
    if at_label:
        cm_ref, cm_exp = cm_ref_l, cm_exp_l
    iou_r, iou_e = iou_per_class(cm_ref), iou_per_class(cm_exp)
    class_r = {name: None if np.isnan(v) else float(v) for name, v in zip(class_names, iou_r)}
    class_e = {name: None if np.isnan(v) else float(v) for name, v in zip(class_names, iou_e)}
    change = {name: (None if class_r[name] is None or class_e[name] is None else class_e[name] - class_r[name])
              for name in class_names}
    ref_miou, exp_miou = mean_iou(cm_ref), mean_iou(cm_exp)
    labelled = bool(cm_ref.sum())
    if not labelled:  # images without masks: no task figure (None, not NaN, in parity.json)
        ref_miou = exp_miou = None  # type: ignore[assignment]
        change, model_res, class_r, class_e = {}, None, {}, {}
    drop = None if ref_miou is None or np.isnan(ref_miou) or np.isnan(exp_miou) else float(ref_miou - exp_miou)
    pair_miou, ignored = mask_miou(cm_pair, class_names)
    res = ParityResult(target=target, precision=precision, status=PASSED, runtime=runtime, reference=reference_runtime,
                       images=done, mask_miou_ignored=ignored,
                       pixel_agreement=100.0 * agree / max(total, 1), mask_miou=pair_miou,
                       max_abs_logit_diff=max_diff if logits_compared else None, reference_miou=ref_miou,
                       exported_miou=exp_miou, miou_drop=drop, iou_change=change, reference_class_iou=class_r,
                       exported_class_iou=class_e, worst_class=worst_class(class_r, class_e),
                       thresholds=dict(thresholds),
                       task_resolution=("label" if at_label else "model") if labelled else "none (no masks)",
                       model_resolution_miou=model_res)
    if "min_agreement" in thresholds and res.pixel_agreement < thresholds["min_agreement"]:
        res.failures.append(f"pixel agreement {res.pixel_agreement:.3f} % < {thresholds['min_agreement']} %")
    if "min_mask_miou" in thresholds and res.mask_miou < thresholds["min_mask_miou"]:
        res.failures.append(f"mask mIoU {res.mask_miou:.4f} < {thresholds['min_mask_miou']}")
    if "max_miou_drop" in thresholds and drop is not None and drop > thresholds["max_miou_drop"]:
        res.failures.append(f"dataset mIoU drop {drop:.4f} ({ref_miou:.4f} -> {exp_miou:.4f}) > "
                            f"{thresholds['max_miou_drop']}")
    worst = res.worst_class
    if "max_class_drop" in thresholds and worst is not None and -worst["change"] > thresholds["max_class_drop"]:
        hurt = [f"{k} {v:+.4f}" for k, v in change.items() if v is not None and -v > thresholds["max_class_drop"]]
        res.failures.append(f"class IoU drop {-worst['change']:.4f} on '{worst['name']}' ({worst['reference_iou']:.4f} "
                            f"-> {worst['exported_iou']:.4f}) > {thresholds['max_class_drop']}"
                            + (f" (every class over: {', '.join(hurt)})" if len(hurt) > 1 else ""))
    if stopped:
        res.failures.append(f"{stopped} (the figures cover the {done} images before it)")
        res.reason = stopped
    if res.failures:
        res.status = FAILED
    return res


class LazySamples:
    """``images`` and ``masks`` views of a dataset for :func:`compare`, read one sample at a time (the pair is read
    once and cached until the next index): memory does not grow with the split."""

    def __init__(self, dataset, count: int, image_fn: Callable[[np.ndarray], np.ndarray],
                 mask_fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.dataset, self.count, self.image_fn, self.mask_fn = dataset, count, image_fn, mask_fn
        self._index, self._pair = -1, None

    def _get(self, i: int):
        if not 0 <= i < self.count:
            raise IndexError(i)
        if i != self._index:
            img, mask = self.dataset[i]
            self._pair, self._index = (self.image_fn(img), self.mask_fn(mask), mask), i
        return self._pair

    def kept(self) -> "LazySamples":
        """The same samples, each read once and kept in memory (for several checks in one process)."""
        return _KeptSamples([self._get(i) for i in range(self.count)])

    @property
    def images(self) -> "_View":
        return _View(self, 0)

    @property
    def masks(self) -> "_View":
        return _View(self, 1)

    @property
    def labels(self) -> "_View":
        """The label maps at their own size (for dataset figures at the labels' resolution)."""
        return _View(self, 2)


class _KeptSamples(LazySamples):
    def __init__(self, samples: list) -> None:
        self.count, self._samples = len(samples), samples

    def _get(self, i: int):
        if not 0 <= i < self.count:
            raise IndexError(i)
        return self._samples[i]


class _View:
    def __init__(self, samples: LazySamples, part: int) -> None:
        self.samples, self.part = samples, part

    def __len__(self) -> int:
        return self.samples.count

    def __getitem__(self, i: int) -> np.ndarray:
        return self.samples._get(i)[self.part]


def combine_results(results: Sequence[ParityResult]) -> ParityResult:
    """One result for a check that ran on several runtimes: the worst one's figures and status (failed >
    not verified > passed), every runtime's figures in ``by_runtime``, every failure kept."""
    rank = {FAILED: 0, NOT_VERIFIED: 1, PASSED: 2}
    worst = min(results, key=lambda r: (rank[r.status], r.pixel_agreement if r.status == PASSED else 0.0))
    out = dataclasses.replace(worst, failures=[], by_runtime={})
    for r in results:
        key = r.runtime or f"not verified: {r.reason}"
        out.by_runtime[key] = {"status": r.status, "pixel_agreement": r.pixel_agreement, "mask_miou": r.mask_miou,
                               "miou_drop": r.miou_drop, "worst_class": r.worst_class,
                               "max_abs_logit_diff": r.max_abs_logit_diff, "reason": r.reason}
        out.failures += [f"{r.runtime}: {f}" for f in r.failures]
    out.runtime = "; ".join(r.runtime for r in results if r.runtime)
    return out


def not_verified(target: str, precision: str, reason: str, thresholds: dict[str, float]) -> ParityResult:
    return ParityResult(target=target, precision=precision, status=NOT_VERIFIED, reason=reason,
                        thresholds=dict(thresholds))


def _figures(r: ParityResult) -> dict[str, Any]:
    return {"pixel_agreement": round(r.pixel_agreement, 4), "mask_miou": round(r.mask_miou, 5),
            "miou_drop": None if r.miou_drop is None else round(r.miou_drop, 5),
            "worst_class": None if r.worst_class is None else {"name": r.worst_class["name"],
                                                                "change": round(r.worst_class["change"], 5)},
            "passed": r.passed}


#: what the mixed-precision search asks of mask parity: closer to passing is a higher mask mIoU, then agreement
JUDGE = Judge(score=lambda r: (r.passed, r.mask_miou, r.pixel_agreement), figures=_figures,
              show=lambda r: (f"agreement {r.pixel_agreement:.3f} %, mask mIoU {r.mask_miou:.4f}"
                              f"{'  PASS' if r.passed else ''}"))
