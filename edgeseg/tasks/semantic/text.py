"""A semantic parity result as the terminal shows it."""

from __future__ import annotations

from edgeseg.tasks.semantic.parity import ParityResult


def describe_parity(res: ParityResult) -> str:
    """Status, runtime(s), agreement, mask mIoU, logit difference, dataset mIoU and per-class IoU change, failures."""
    lines = [f"{res.target} {res.precision}: {res.status.upper()}" + (f" ({res.runtime})" if res.runtime else "")]
    if res.status == "not-verified":
        lines.append(f"  not verified: {res.reason}")
        return "\n".join(lines)
    for runtime, r in res.by_runtime.items():
        if "path" in r:  # a TFLite file checked on several kernel paths
            exact = "bit-exact with x86-64 XNNPACK" if r["bit_exact_vs_host_xnnpack"] else "differs from x86-64 XNNPACK"
            figures = ("does not run" if r["pixel_agreement"] is None else
                       f"agreement {r['pixel_agreement']:.3f} %, mask mIoU {r['mask_miou']:.4f}, max |Δlogit| "
                       + ("—" if r["max_abs_logit_diff"] is None else f"{r['max_abs_logit_diff']:.3g}"))
            lines.append(f"  {r['path']:<28} {r['status'].upper():<7}{'' if r['gated'] else ' (not gated)'} "
                         f"{figures}; {exact}")
            continue
        lines.append(f"  {runtime}: {r['status'].upper()}, agreement {r['pixel_agreement'] or 0:.3f} %, "
                     f"mask mIoU {r['mask_miou'] or 0:.4f}")
    if res.pixel_agreement is None:
        lines += [f"  FAILED: {f}" for f in res.failures]
        return "\n".join(lines)
    lines.append(f"  images              {res.images}")
    if res.reference != "PyTorch":
        lines.append(f"  reference           {res.reference}")
    lines.append(f"  pixel agreement     {res.pixel_agreement:.3f} %   (min {res.thresholds.get('min_agreement', '—')})")
    lines.append(f"  mask mIoU vs ref    {res.mask_miou:.4f}     (min {res.thresholds.get('min_mask_miou', '—')})")
    if res.mask_miou_ignored:
        left = ", ".join(f"{k} ({v['reference_pixels']} reference / {v['exported_pixels']} exported pixels)"
                         for k, v in res.mask_miou_ignored.items())
        lines.append(f"  left out of it      {left}: under 0.01 % of the pixels")
    lines.append("  max |Δlogit|        " + ("— (the export outputs the class map)" if res.max_abs_logit_diff is None
                                             else f"{res.max_abs_logit_diff:.4g}"))
    drop = "" if res.miou_drop is None else (f"  drop {res.miou_drop:+.4f} (max "
                                             f"{res.thresholds.get('max_miou_drop', '—')})")
    where = "at each label's size" if res.task_resolution == "label" else "at the model's size"
    if res.reference_miou is None or res.reference_miou != res.reference_miou:  # nan: no labelled pixel
        lines.append("  dataset mIoU        — (the images have no masks: task figures left out)")
        return "\n".join(lines)
    lines.append(f"  dataset mIoU        reference {res.reference_miou:.4f}  exported {res.exported_miou:.4f}{drop}  "
                 f"({where})")
    if res.model_resolution_miou:
        mr = res.model_resolution_miou
        lines.append(f"  at the model's size reference {mr['reference_miou']:.4f}  exported {mr['exported_miou']:.4f}")
    changes = ", ".join(f"{k} {v:+.4f}" for k, v in res.iou_change.items() if v is not None)
    lines.append(f"  IoU change/class    {changes}")
    if res.worst_class is not None:
        w = res.worst_class
        lines.append(f"  worst class         {w['name']} {w['reference_iou']:.4f} -> {w['exported_iou']:.4f} "
                     f"({w['change']:+.4f}; max drop {res.thresholds.get('max_class_drop', '—')})")
    lines += [f"  FAILED: {f}" for f in res.failures]
    return "\n".join(lines)
