"""An instance export record as the terminal shows it."""

from __future__ import annotations

from typing import Any


def describe_instance(rec: dict[str, Any], exported: bool) -> str:
    """Size and time (``exported``), the mixed-precision search, and the instance-parity figures and failures."""
    p = rec["parity"]
    lines = []
    if exported:
        lines.append(f"{rec['path']}: {rec['size_bytes'] / 1e6:.2f} MB in {rec['export_seconds']} s")
    search = (rec.get("details") or {}).get("search")
    if exported and search:
        v = search["validation"]
        lines.append(f"mix: {len(v['float_ops'])} of {search['candidates']} convolution/fully-connected ops in float "
                     f"({v['float_macs_pct']} % of MACs; budget {search['max_float_macs']:g} %), "
                     f"{'passed' if search['passed'] else 'no mix passed'} on the validation split after "
                     f"{search['trials']} tries ({search['seconds']} s)")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines.append(f"{rec['target']} {rec['precision']} parity {p['status'].upper()} ({p['runtime']}, {p['images']} "
                 f"images): {p['matched']} matched, {p['missed']} missed, {p['extra']} extra of "
                 f"{p['reference_detections']}; mask IoU {fmt(p['mask_iou_mean'])} (min {fmt(p['mask_iou_min'])}), "
                 f"box IoU {fmt(p['box_iou_mean'])}, max score diff {fmt(p['max_score_diff'])}; mask AP "
                 f"{fmt(p['exported_ap'].get('mask'))} vs reference {fmt(p['reference_ap'].get('mask'))}")
    lines += [f"  FAILED: {f}" for f in p["failures"]]
    if p["reason"]:
        lines.append(f"  {p['reason']}")
    return "\n".join(lines)


def describe_training(rec: dict[str, Any]) -> str:
    """A Mask R-CNN training record (metrics.json) in one line (a run trained before the shared loop has no
    validation figures)."""
    best = rec.get("best_val_mask_ap")
    return (f"trained {rec['steps']} steps on {rec['train_images']} images in {rec['seconds']} s "
            f"(skipped: {rec['skipped']}); loss {rec['first_loss']:.3f} -> {rec['last_loss']:.3f}; "
            + (f"best val mask AP {best:.4f} ({rec['val_images']} images"
               + (", stopped early" if rec.get("stopped_early") else "") + "); " if best is not None else "")
            + f"test mask AP {rec['ap']['mask']['AP']:.4f}, box AP {rec['ap']['box']['AP']:.4f}")
