"""``edgeseg maskrcnn train`` / ``export`` / ``check``: a Mask R-CNN run directory.

The layout is a semantic run's (:mod:`edgeseg.tasks.semantic.run`), with the files that differ named apart::

    RUN/maskrcnn.pt      {"config": ..., "state_dict": ...} (loaded with weights_only=True); its name tells every
                         command that the run is an instance run without unpickling it (a semantic run has
                         checkpoint.pt, a self-describing Checkpoint with preprocessing and class colours)
                         and, since Mask R-CNN trains through the shared epoch loop, "state": the training state
                         (optimizer, scheduler, scaler, RNG, the loop's counters) that ``--resume`` continues from
    RUN/maskrcnn-best.pt the same for the epoch with the best val mask AP
    RUN/metrics.json     the config, losses, skipped-image counts, per-epoch history and COCO AP on the test split
    RUN/history.csv, RUN/tensorboard/   per-epoch loss and val mask/box AP, per-step loss and learning rate
    RUN/export/maskrcnn-<target>-<precision>/model.<suffix>  export.json  parity.json
    RUN/report.json  report.md  report.html

``export.json`` is the semantic export record (``edgeseg.export/1``: target, precision, path relative to the run,
size, seconds, checkpoint and its digest, details, versions) with ``"task": "instance"``, the graph's counts in
``details.graph`` and the graph-vs-eager comparison; ``parity.json`` is ``edgeseg.parity/1`` with
``"task": "instance"`` and the instance figures (:class:`~edgeseg.tasks.instance.parity.InstanceParity`). Runs exported
before this layout keep one ``instance-parity.json`` per export, which every command still reads.

Every image is letterboxed to the run's square size (longer side scaled to it, bottom/right padded with black):
the export graph has one fixed input size, so training, evaluation and the app see the same geometry.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.core.errors import DataError, UsageError

CHECKPOINT = "maskrcnn.pt"
BEST = "maskrcnn-best.pt"  # the epoch with the best val mask AP (same format)
METRICS = "metrics.json"  # "maskrcnn.json" before the shared layout
RECORD, PARITY, LEGACY_RECORD = "export.json", "parity.json", "instance-parity.json"


def write_record(out_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write an instance export's ``export.json`` and ``parity.json`` (``record["parity"]``: the parity); returns
    the record as :func:`read_record` reads it back."""
    from edgeseg.core.atomic import write_json
    from edgeseg.core.versions import package_versions

    out_dir = Path(out_dir)
    export = {"schema": "edgeseg.export/1", "task": "instance",
              **{k: v for k, v in record.items() if k not in ("parity", "schema", "task")}}
    export.setdefault("versions", package_versions())
    export.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    parity = {"schema": "edgeseg.parity/1", "task": "instance", "score_threshold": record.get("score_threshold"),
              **record["parity"]}
    write_json(out_dir / PARITY, parity)
    write_json(out_dir / RECORD, export)
    (out_dir / LEGACY_RECORD).unlink(missing_ok=True)  # exported again: the old record no longer describes it
    return {**export, "parity": parity}


def read_record(out_dir: Path) -> dict[str, Any] | None:
    """An instance export's record (``export.json`` with its ``parity.json`` as ``"parity"``; an older run's
    ``instance-parity.json``), or None when the directory holds no instance export. Unreadable JSON is a
    :class:`DataError` naming the file."""
    out_dir = Path(out_dir)
    rec_path = out_dir / RECORD
    if not rec_path.is_file():
        rec_path = out_dir / LEGACY_RECORD
        if not rec_path.is_file():
            return None
    try:
        rec = json.loads(rec_path.read_text())
        if rec_path.name == RECORD:
            if rec.get("task") != "instance":
                return None
            par = out_dir / PARITY
            rec["parity"] = json.loads(par.read_text()) if par.is_file() else None
    except (OSError, ValueError) as e:
        raise DataError(f"'{rec_path}' is not a readable export record ({type(e).__name__}: {e}); export again "
                        f"with: edgeseg export {out_dir.parent.parent} --target {rec_path.parent.name.split('-')[1]}"
                        ) from None
    return rec


def instance_exports(run: Path, target: str = "*") -> list[tuple[Path, dict[str, Any]]]:
    """Every instance export of ``run`` (of ``target``): (directory, record), in name order."""
    out = []
    for d in sorted(Path(run).glob(f"export/maskrcnn-{target}-*")):
        if d.is_dir():
            rec = read_record(d)
            if rec is not None:
                out.append((d, rec))
    return out


class Letterboxed:
    """A dataset's ``instances(i)`` at ``size`` x ``size`` (aspect kept, padded)."""

    def __init__(self, ds, size: int) -> None:
        if not hasattr(ds, "instances"):
            raise UsageError(f"dataset '{getattr(ds, 'spec', ds)}' has no instance annotations (Mask R-CNN needs "
                             f"COCO-format instances or the synthetic data)")
        self.ds, self.size = ds, size

    def __len__(self) -> int:
        return len(self.ds)

    def name(self, i: int) -> str:
        return self.ds.name(i) if hasattr(self.ds, "name") else f"sample {i}"

    def instances(self, i: int):
        import torch
        import torch.nn.functional as F

        img, t = self.ds.instances(i)
        h, w = img.shape[:2]
        if (h, w) == (self.size, self.size):
            return img, t
        s = self.size / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
        out = np.zeros((self.size, self.size, 3), np.uint8)
        out[:nh, :nw] = x.round().clamp(0, 255).byte().numpy()
        masks = np.zeros((len(t["masks"]), self.size, self.size), np.uint8)
        if len(t["masks"]):
            m = torch.from_numpy(np.asarray(t["masks"], np.float32))[None]
            masks[:, :nh, :nw] = (F.interpolate(m, size=(nh, nw), mode="nearest")[0].numpy() > 0.5)
        boxes = np.asarray(t["boxes"], np.float32) * s
        keep = (masks.reshape(len(masks), -1).sum(1) > 0) if len(masks) else np.zeros(0, bool)
        return out, {"boxes": boxes[keep], "labels": np.asarray(t["labels"])[keep], "masks": masks[keep]}


def _datasets(data: str, size: int, limit: int | None, split: str):
    from edgeseg.data import open_split

    ds = Letterboxed(open_split(data, split, size), size)
    n = len(ds) if limit is None else min(limit, len(ds))
    return ds, n


class _Subset:
    def __init__(self, ds, n: int) -> None:
        self.ds, self.n = ds, n

    def __len__(self) -> int:
        return self.n

    def name(self, i: int) -> str:
        return self.ds.name(i)

    def instances(self, i: int):
        return self.ds.instances(i)


def build_from_config(cfg: dict[str, Any]):
    from edgeseg.tasks.instance.model import build_maskrcnn

    return build_maskrcnn(int(cfg["num_classes"]), cfg["backbone"], min_size=int(cfg["size"]),
                          mask_layers=tuple(cfg["mask_layers"]) or None,
                          rpn_pre_nms_top_n_train=int(cfg["rpn_pre_nms_train"]),
                          rpn_post_nms_top_n_train=int(cfg["rpn_post_nms_train"]),
                          box_batch_size_per_image=int(cfg["box_batch_size"]))


def train_run(output: Path, data: str = "synthetic", backbone: str = "mobilenet_v3_large", size: int = 64,
              epochs: int = 6, batch_size: int = 4, lr: float = 0.01, limit: int | None = None,
              mask_layers: tuple[int, ...] = (32, 32), seed: int = 0, eval_images: int = 16,
              iou_balanced: float | None = None, backbone_from: Path | None = None,
              log: Callable[[str], None] = print, *, resume: bool = False, checkpoint_every: int | None = None,
              patience: int | None = None, device: str = "auto", quiet: bool = True) -> dict[str, Any]:
    """Train Mask R-CNN on ``data``'s train split through the shared epoch loop (mask AP on ``eval_images`` of
    the val split after each epoch: ``history.csv``, TensorBoard, ``best`` and ``patience``); evaluate COCO AP on
    its test split; write the run. ``RUN/maskrcnn.pt`` is replaced atomically at each epoch end and every
    ``checkpoint_every`` steps with the training state, so ``resume`` continues exactly where it stopped.
    ``iou_balanced``: train the box classifier with the IoU-balanced loss of this eta (None: torchvision's).
    ``backbone_from``: a semantic edgeseg run whose MobileNetV3-Large encoder initializes the backbone."""
    import torch

    from edgeseg.core.atomic import atomic_path, ensure_dir, write_json
    from edgeseg.tasks.instance.evaluate import coco_ap
    from edgeseg.tasks.instance.train import predict, train_instance
    from edgeseg.train.logger import RunLogger
    from edgeseg.train.state import cpu_state

    if size % 32 or size < 32:
        raise UsageError(f"--size must be a multiple of 32 (the FPN's strides), got {size}")
    output = Path(output)
    ckpt_path = output / CHECKPOINT
    old: dict[str, Any] = {}
    if resume:
        if not ckpt_path.is_file():
            raise UsageError(f"--resume: no {CHECKPOINT} at '{ckpt_path}' to resume from")
        old = _load_checkpoint(ckpt_path)
        if not isinstance(old.get("config"), dict) or "state_dict" not in old:
            raise DataError(f"--resume: '{ckpt_path}' is not an edgeseg Mask R-CNN checkpoint (no config and "
                            f"state_dict); train into a new -o directory")
        if "state" not in old:
            raise UsageError(f"--resume: '{ckpt_path}' was written without its training state (edgeseg before "
                             f"Mask R-CNN trained through the shared loop); train into a new -o directory")
    elif ckpt_path.exists():
        raise UsageError(f"run directory '{output}' already holds {CHECKPOINT}; use --resume to continue it or -o "
                         f"for a new directory")
    output = ensure_dir(output)
    train_ds, n = _datasets(data, size, limit, "train")
    classes = [getattr(c, "name", str(c)) for c in (getattr(train_ds.ds, "classes", None) or [])]
    if len(classes) < 2:
        raise DataError(f"dataset '{data}' names {len(classes)} classes; Mask R-CNN needs background + at least one")
    num_classes = len(classes)  # index 0 is the background, as torchvision counts
    cfg = {"data": data, "backbone": backbone, "size": size, "num_classes": num_classes,
           "classes": list(classes), "mask_layers": list(mask_layers), "rpn_pre_nms_train": 200,
           "rpn_post_nms_train": 100, "box_batch_size": 64, "epochs": epochs, "batch_size": batch_size, "lr": lr,
           "seed": seed, "iou_balanced": iou_balanced,
           "backbone_from": str(backbone_from) if backbone_from else None}
    state = old.get("state", {})
    if old:
        diff = [k for k, v in cfg.items() if old["config"].get(k) != v]
        if diff:
            raise UsageError(f"--resume: run '{output}' was trained with other settings ("
                             + ", ".join(f"{k}={old['config'].get(k)!r}, now {cfg[k]!r}" for k in diff)
                             + "); resume without changing them, or train into a new -o directory")
        if state.get("finished"):
            log(f"run '{output}' is already finished; nothing to resume")
            return training_record(output) or {}
    torch.manual_seed(seed)
    model = build_from_config(cfg)
    if old:
        model.load_state_dict(old["state_dict"])
    elif backbone_from:
        from edgeseg.tasks.instance.model import load_backbone_from_run

        log(f"backbone: {load_backbone_from_run(model, backbone_from)} tensors from {backbone_from}")
    restore = None
    if iou_balanced is not None:
        from edgeseg.tasks.instance.model import use_iou_balanced_loss

        restore = use_iou_balanced_loss(model, iou_balanced)
    val_ds, v = _datasets(data, size, eval_images, "val")
    val_samples = [val_ds.instances(i) for i in range(v)]

    def validate(m) -> dict[str, Any]:
        return coco_ap([t for _, t in val_samples], predict(m, [img for img, _ in val_samples]), num_classes)

    def save(st: dict[str, Any], best: bool) -> None:
        with atomic_path(output / (BEST if best else CHECKPOINT)) as tmp:
            torch.save({"config": cfg, "state_dict": cpu_state(model), "state": st}, tmp)

    logger = RunLogger(output, [])
    if state:
        log(f"resuming {ckpt_path} at epoch {int(state['epoch']) + 1} step {int(state['step_in_epoch'])}")
    try:
        res = train_instance(model, _Subset(train_ds, n), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                             log=log, validate=validate if val_samples else None, save=save, state=state,
                             checkpoint_every=checkpoint_every, patience=patience, device=device, logger=logger,
                             quiet=quiet)
    finally:
        logger.close()
        if restore:
            restore()
    seconds = float(res["state"]["seconds"])
    test_ds, m = _datasets(data, size, eval_images, "test")
    samples = [test_ds.instances(i) for i in range(m)]
    ap = coco_ap([t for _, t in samples], predict(model, [img for img, _ in samples]), num_classes)
    model.cpu()
    save(res["state"], best=False)
    record = {"config": cfg, "train_images": res["images"], "skipped": res["skipped"], "steps": res["steps"],
              "seconds": round(seconds, 1), "first_loss": res["losses"][0], "last_loss": res["losses"][-1],
              "test_images": m, "ap": ap, "val_images": v, "best_val_mask_ap": res["best"] if val_samples else None,
              "stopped_early": res["stopped_early"], "train_images_per_second": res["images_per_second"],
              "history": res["history"]}
    write_json(output / METRICS, record)
    (output / "maskrcnn.json").unlink(missing_ok=True)  # trained again: the old layout's record is stale
    return record


def training_record(run: Path) -> dict[str, Any] | None:
    """RUN/metrics.json (or an older run's maskrcnn.json), None when neither can be read."""
    for name in (METRICS, "maskrcnn.json"):
        try:
            return json.loads((Path(run) / name).read_text())
        except (OSError, ValueError):
            continue
    return None


def load_run(run: Path):
    """The model and config of a Mask R-CNN run (``weights_only=True``)."""
    path = Path(run) / CHECKPOINT
    if not path.is_file():
        raise UsageError(f"'{run}' has no {CHECKPOINT}; train one with: edgeseg maskrcnn train -o {run}")
    ckpt = _load_checkpoint(path)
    try:
        cfg = ckpt["config"]
        model = build_from_config(cfg)
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise DataError(f"'{path}' is not an edgeseg Mask R-CNN checkpoint ({type(e).__name__}: "
                        f"{str(e)[:200]})") from None
    return model.eval(), cfg


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """``maskrcnn.pt`` as a dictionary, read with ``weights_only=True``."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except EOFError as e:
        raise DataError(f"'{path}' is not an edgeseg Mask R-CNN checkpoint ({type(e).__name__}: "
                        f"{str(e)[:200]})") from None
    except Exception as e:  # noqa: BLE001 - torch.load's weights-only unpickler raises UnpicklingError & co
        raise DataError(f"'{path}' cannot be loaded safely ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ckpt, dict):
        raise DataError(f"'{path}' is not an edgeseg Mask R-CNN checkpoint (a {type(ckpt).__name__}, not a "
                        f"dictionary)")
    return ckpt


def check_samples(cfg: dict[str, Any], limit: int):
    """The first ``limit`` test images (letterboxed HWC uint8) and their instance targets; DataError when none."""
    size = int(cfg["size"])
    test_ds, m = _datasets(cfg["data"], size, limit, "test")
    samples = [test_ds.instances(i) for i in range(m)]
    if not samples:
        raise DataError(f"the test split of '{cfg['data']}' is empty: nothing to check the export on")
    return [img for img, _ in samples], [t for _, t in samples]


def _export_dir(run: Path, target: str, precision: str) -> Path:
    return Path(run) / "export" / f"maskrcnn-{target}-{precision}"


def export_run(run: Path, target: str, precision: str | None = None, counts=None, limit: int = 8,
               score_threshold: float = 0.3, thresholds: dict[str, float | None] | None = None,
               log: Callable[[str], None] = print, max_float_macs: float | None = None) -> dict[str, Any]:
    """Export a run's Mask R-CNN to ``target`` and check instance parity on the test split. ``thresholds``:
    overrides of the precision's defaults (``min_mask_iou``, ``min_box_iou``, ``max_unmatched``, ``max_ap_drop``).
    int8-mixed searches on ``limit`` validation images with ``max_float_macs`` % of the MACs allowed in float."""
    from edgeseg.tasks.instance.check import GraphCounts, check_precision, graph_vs_eager
    from edgeseg.tasks.instance.export import export_instance

    precision = check_precision(target, precision)
    if max_float_macs is not None and precision != "int8-mixed":
        raise UsageError("--max-float-macs applies to --precision int8-mixed (the mixed-precision search)")
    if max_float_macs is not None and not 0 <= max_float_macs <= 100:
        raise UsageError(f"--max-float-macs takes a percentage from 0 to 100, not {max_float_macs:g}")
    counts = counts or GraphCounts()
    model, cfg = load_run(run)
    size = int(cfg["size"])
    images, targets = check_samples(cfg, limit)
    out_dir = _export_dir(run, target, precision)
    log(f"graph vs torchvision eager on {len(images)} test images")
    same = graph_vs_eager(model, images, size, counts)
    log(f"exporting {target} {precision}")
    calib, val = [], []
    if precision in ("int8", "int8-mixed"):
        train_ds, n = _datasets(cfg["data"], size, 32, "train")
        calib = [train_ds.instances(i)[0] for i in range(n)]
    if precision == "int8-mixed":
        val_ds, n = _datasets(cfg["data"], size, limit, "val")
        val = [val_ds.instances(i) for i in range(n)]
    exp = export_instance(model, target, precision, out_dir, size, counts, calibration=calib,
                          metadata={"classes": json.dumps(cfg.get("classes", []))}, validation=val,
                          max_float_macs=max_float_macs, score_threshold=score_threshold, log=log,
                          thresholds=thresholds)
    parity = _parity(model, target, precision, exp.path, images, targets, counts, score_threshold, thresholds, log)
    from edgeseg.core.digest import file_digest

    record = {"target": target, "precision": precision, "path": str(exp.path.relative_to(run)),
              "size_bytes": exp.size_bytes, "checkpoint": CHECKPOINT,
              "checkpoint_digest": file_digest(Path(run) / CHECKPOINT),
              "export_seconds": round(exp.seconds, 1), "details": exp.details, "graph_vs_eager": same,
              "score_threshold": score_threshold, "classes": list(cfg.get("classes") or []),
              "parity": parity.to_json()}
    return write_record(out_dir, record)


def _parity(model, target: str, precision: str, path: Path, images, targets, counts, score_threshold: float,
            thresholds: dict[str, float | None] | None, log: Callable[[str], None]):
    from edgeseg.tasks.instance.check import check_instance, load_runner
    from edgeseg.tasks.instance.parity import instance_thresholds

    log(f"instance parity on {len(images)} test images")
    runner = load_runner(target, path)
    return check_instance(model, runner, target, precision, images, targets, counts,
                          instance_thresholds(precision, **(thresholds or {})), score_threshold)


def check_run(run: Path, target: str, precision: str | None = None, limit: int = 8, score_threshold: float = 0.3,
              thresholds: dict[str, float | None] | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Check an existing export of a run again (the file as it is on disk now, against the eager model, with the
    export's own graph counts); the new figures replace the record's ``parity``."""
    from edgeseg.tasks.instance.check import FILES, GraphCounts, check_precision

    precision = check_precision(target, precision)
    out_dir = _export_dir(run, target, precision)
    record, path = read_record(out_dir), out_dir / FILES[target]
    if record is None or not path.exists():
        raise UsageError(f"run '{run}' has no Mask R-CNN {target} {precision} export ({out_dir} lacks "
                         f"{RECORD if record is None else path.name}); make it with: edgeseg "
                         f"maskrcnn export {run} --target {target} --precision {precision}")
    try:
        graph = record["details"]["graph"]
        counts = GraphCounts(**{k: int(graph[k]) for k in GraphCounts().to_json()})
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"'{out_dir / RECORD}' is not an edgeseg Mask R-CNN export record ({type(e).__name__}: "
                        f"{e}); export again with: edgeseg maskrcnn export {run} --target {target}") from None
    model, cfg = load_run(run)
    images, targets = check_samples(cfg, limit)
    parity = _parity(model, target, precision, path, images, targets, counts, score_threshold, thresholds, log)
    record.update(score_threshold=score_threshold, parity=parity.to_json())
    return write_record(out_dir, record)
