"""Mask R-CNN as an export-ready graph: fixed input size, fixed proposal and detection counts, static shapes, no
Python control flow — the same computation as torchvision's eager inference, written with operations every
target has (TopK, Gather, elementwise maths, reductions, convolutions).

* **NMS** is exact greedy NMS in Cluster-NMS form (Zheng et al., "Enhancing Geometric Factors in Model Learning
  and Inference for Object Detection and Instance Segmentation", 2021): with candidates sorted by score, keep_j =
  valid_j and no kept i < j of the same group overlaps j by more than the threshold. Iterating that rule from
  "all valid kept" reaches greedy NMS's answer exactly once it stops changing; the graph unrolls ``nms_iterations``
  steps (each an N x N mask and a max-reduction). :func:`nms_iterations_needed` measures how many given candidates
  need; ``edgeseg maskrcnn export`` compares the whole graph with torchvision's eager output on the test images.
* **RoIAlign** (torchvision's ``roi_align``, ``aligned=False``, ``sampling_ratio`` samples per bin) is bilinear
  sampling by Gather: every FPN level flattened into one [positions, C] table, each box's level chosen by the FPN
  rule and turned into an offset into it, four corner rows gathered per sample and averaged per bin.
* **Outputs** follow TFLite's detection convention: ``boxes`` [1, D, 4] (x1, y1, x2, y2 in input pixels),
  ``classes`` [1, D] and ``num_detections`` [1] as float32 (exact integers), ``scores`` [1, D] (sorted, padded
  with zeros), ``masks`` [1, D, M, M] mask probabilities in each box (torchvision pastes them into the image;
  :func:`paste_masks` does the same on the host).

The input is [1, 3, S, S] RGB in [0, 1] (torchvision's convention); normalization is in the graph.
"""

from __future__ import annotations

import numpy as np

from edgeseg.core.errors import UsageError

OUTPUTS = ("boxes", "scores", "classes", "num_detections", "masks")


def _pooler_setup(pooler, features: dict, size: int):
    """Scales and FPN level range of torchvision's ``MultiScaleRoIAlign`` for this input size."""
    from torchvision.ops.poolers import _setup_scales

    feats = [features[k] for k in pooler.featmap_names if k in features]
    scales, mapper = _setup_scales(feats, [(size, size)], pooler.canonical_scale, pooler.canonical_level)
    names = [k for k in pooler.featmap_names if k in features]
    return names, scales, mapper


def build_static(model, size: int, pre_nms_top_n: int = 200, proposals: int = 100, candidates: int = 300,
                 detections: int = 20, nms_iterations: int = 12):
    """The export-ready graph of a trained torchvision Mask R-CNN for [1, 3, size, size] inputs.

    ``pre_nms_top_n``: proposals kept per FPN level before the RPN's NMS; ``proposals``: kept after it;
    ``candidates``: (box, class) pairs entering the detection NMS (ranked by score); ``detections``: outputs.
    torchvision's eager model with the same counts (:func:`configure_eager`) gives the same detections.
    """
    import torch
    import torch.nn.functional as F
    from torchvision.models.detection.image_list import ImageList

    if size % 32:
        raise UsageError(f"Mask R-CNN export size must be a multiple of 32 (FPN strides), got {size}")
    t = model.transform
    if not (t.min_size[-1] == size and t.max_size == size):
        raise UsageError(f"the model resizes images to min {t.min_size[-1]} / max {t.max_size}; export it at "
                         f"its own fixed size ({t.max_size}) so eager and exported models see the same pixels")
    for name, v in (("pre_nms_top_n", pre_nms_top_n), ("proposals", proposals), ("candidates", candidates),
                    ("detections", detections), ("nms_iterations", nms_iterations)):
        if int(v) < 1:
            raise UsageError(f"{name} must be >= 1, got {v}")
    model = model.eval().cpu()

    # one eager pass fixes what depends only on the size: anchors, feature shapes, pooler scales
    with torch.no_grad():
        x0 = torch.zeros(1, 3, size, size)
        feats = model.backbone(t.normalize(x0[0])[None])
        il = ImageList(x0, [(size, size)])
        anchors = model.rpn.anchor_generator(il, list(feats.values()))[0]
        obj, _ = model.rpn.head(list(feats.values()))
        per_level = [int(o[0].numel()) for o in obj]
        level_shapes = [tuple(int(v) for v in o.shape[-2:]) for o in obj]
        per_location = [int(o.shape[1]) for o in obj]
    rh = model.roi_heads
    box_names, box_scales, box_map = _pooler_setup(rh.box_roi_pool, feats, size)
    mask_names, mask_scales, mask_map = _pooler_setup(rh.mask_roi_pool, feats, size)
    shapes = {k: tuple(v.shape[-2:]) for k, v in feats.items()}
    channels = int(model.backbone.out_channels)
    num_classes = rh.box_predictor.cls_score.out_features
    pre = [min(pre_nms_top_n, n) for n in per_level]
    proposals = min(proposals, sum(pre))
    cand = min(candidates, proposals * (num_classes - 1))
    detections = min(detections, cand)

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.rpn_head = model.backbone, model.rpn.head
            self.box_head, self.box_predictor = rh.box_head, rh.box_predictor
            self.mask_head, self.mask_predictor = rh.mask_head, rh.mask_predictor
            self.register_buffer("mean", torch.tensor(t.image_mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(t.image_std).view(1, 3, 1, 1))
            self.register_buffer("anchors", anchors.clone())
            self.size = size
            self.config = {"size": size, "pre_nms_top_n": pre_nms_top_n, "proposals": proposals,
                           "candidates": cand, "detections": detections, "nms_iterations": nms_iterations,
                           "num_classes": num_classes, "mask_size": 2 * rh.mask_roi_pool.output_size[0]}

        # -- pieces ---------------------------------------------------------------------------------------
        def nms(self, boxes, valid, group, threshold: float, n: int):
            return cluster_nms(boxes, valid, group, threshold, n, nms_iterations)

        def roi_align(self, flat, boxes, r: int, names, scales, mapper, out: int, ratio: int):
            """torchvision ``roi_align`` (aligned=False) of ``boxes`` [r, 4] on the FPN level the FPN rule picks,
            as gathers from ``flat`` [positions, C] (the levels ``names`` flattened channel-last)."""
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            lvl = torch.floor(mapper.lvl0 + torch.log2(area.clamp(min=1e-12).sqrt() / mapper.s0) + mapper.eps)
            lvl = lvl.clamp(mapper.k_min, mapper.k_max) - mapper.k_min
            onehot = (lvl[:, None] == torch.arange(len(names), dtype=torch.float32)[None, :]).float()
            hs = torch.tensor([float(shapes[k][0]) for k in names])
            ws = torch.tensor([float(shapes[k][1]) for k in names])
            offs = torch.tensor([float(sum(shapes[n][0] * shapes[n][1] for n in names[:i]))
                                 for i in range(len(names))])
            sc = torch.tensor([float(s) for s in scales])
            pick = lambda table: (onehot * table[None, :]).sum(dim=1)  # noqa: E731
            scale, h, w, off = pick(sc), pick(hs), pick(ws), pick(offs)
            x1, y1 = boxes[:, 0] * scale, boxes[:, 1] * scale
            rw = (boxes[:, 2] * scale - x1).clamp(min=1.0)
            rh_ = (boxes[:, 3] * scale - y1).clamp(min=1.0)
            grid = (torch.arange(out * ratio, dtype=torch.float32) + 0.5) / ratio  # sample positions in bins
            ys = y1[:, None] + grid[None, :] * (rh_ / out)[:, None]  # [R, out*ratio]
            xs = x1[:, None] + grid[None, :] * (rw / out)[:, None]

            def axis(v, n):
                ok = ((v >= -1.0) & (v <= n[:, None])).float()
                vc = torch.minimum(v.clamp(min=0.0), n[:, None] - 1)
                lo = torch.floor(vc)
                hi = torch.minimum(lo + 1, n[:, None] - 1)
                frac = vc - lo
                return lo, hi, (1 - frac) * ok, frac * ok

            y0, y1i, wy0, wy1 = axis(ys, h)
            x0, x1i, wx0, wx1 = axis(xs, w)
            s = out * ratio
            acc = 0
            for yi, wy in ((y0, wy0), (y1i, wy1)):
                for xi, wx in ((x0, wx0), (x1i, wx1)):
                    idx = off[:, None, None] + yi[:, :, None] * w[:, None, None] + xi[:, None, :]  # [R, s, s]
                    vals = flat[idx.reshape(-1).long()].reshape(r, s, s, channels)
                    acc = acc + vals * (wy[:, :, None] * wx[:, None, :])[..., None]
            acc = acc.permute(0, 3, 1, 2)  # [R, C, s, s]
            return F.avg_pool2d(acc, ratio) if ratio > 1 else acc

        @staticmethod
        def decode(deltas, ref, weights, clip: float):
            wx, wy, ww, wh = weights
            widths, heights = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
            cx, cy = ref[:, 0] + 0.5 * widths, ref[:, 1] + 0.5 * heights
            dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
            dw = (deltas[..., 2] / ww).clamp(max=clip)
            dh = (deltas[..., 3] / wh).clamp(max=clip)
            shape = (-1,) + (1,) * (deltas.dim() - 2)
            pcx, pcy = dx * widths.view(shape) + cx.view(shape), dy * heights.view(shape) + cy.view(shape)
            pw, ph = torch.exp(dw) * widths.view(shape), torch.exp(dh) * heights.view(shape)
            # torchvision's BoxCoder: c_to_c_h = 0.5 * h, boxes = centre -/+ that
            return torch.stack((pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph), dim=-1)

        # -- the graph --------------------------------------------------------------------------------------
        def forward(self, x):
            feats = self.backbone((x - self.mean) / self.std)
            levels = list(feats.values())
            obj, deltas = self.rpn_head(levels)
            # torchvision's concat_box_prediction_layers with the sizes as constants: [H*W*A] and [H*W*A, 4]
            # in anchor order (position-major, anchor-minor)
            obj = torch.cat([o.permute(0, 2, 3, 1).reshape(-1) for o in obj])
            deltas = torch.cat([d.reshape(a, 4, hw[0], hw[1]).permute(2, 3, 0, 1).reshape(-1, 4)
                                for d, a, hw in zip(deltas, per_location, level_shapes)])
            coder = model.rpn.box_coder
            boxes = self.decode(deltas, self.anchors, coder.weights, coder.bbox_xform_clip)
            # per-level top-k (torchvision ranks logits per level), levels concatenated
            sel_s, sel_b, sel_l, start = [], [], [], 0
            for li, (n, k) in enumerate(zip(per_level, pre)):
                s, i = obj[start : start + n].topk(k)
                sel_s.append(s)
                sel_b.append(boxes[start : start + n][i])
                sel_l.append(torch.full((k,), float(li)))
                start += n
            scores = torch.sigmoid(torch.cat(sel_s))
            boxes = torch.cat(sel_b).clamp(min=0.0, max=float(size))
            lvl = torch.cat(sel_l)
            wh = boxes[:, 2:] - boxes[:, :2]
            valid = ((wh[:, 0] >= model.rpn.min_size) & (wh[:, 1] >= model.rpn.min_size)
                     & (scores >= model.rpn.score_thresh)).float()
            # within a level the candidates are score-sorted (top-k), which is all NMS per level needs
            keep = self.nms(boxes, valid, lvl, model.rpn.nms_thresh, sum(pre))
            ranked, order = torch.where(keep > 0, scores, -1.0 + 0 * scores).topk(proposals)
            props = boxes[order]
            prop_ok = (ranked >= 0).float()

            flat = torch.cat([feats[k][0].permute(1, 2, 0).reshape(-1, channels) for k in box_names])
            pooled = self.roi_align(flat, props, proposals, box_names, box_scales, box_map,
                                    rh.box_roi_pool.output_size[0], rh.box_roi_pool.sampling_ratio)
            logits, reg = self.box_predictor(self.box_head(pooled))
            cls_boxes = self.decode(reg.reshape(proposals, num_classes, 4), props, rh.box_coder.weights,
                                    rh.box_coder.bbox_xform_clip).clamp(min=0.0, max=float(size))
            probs = torch.softmax(logits, -1)
            cls_boxes, probs = cls_boxes[:, 1:].reshape(-1, 4), probs[:, 1:].reshape(-1)
            labels = torch.arange(1, num_classes, dtype=torch.float32).repeat(proposals)
            wh = cls_boxes[:, 2:] - cls_boxes[:, :2]
            ok = ((probs > rh.score_thresh) & (wh[:, 0] >= 1e-2) & (wh[:, 1] >= 1e-2)).float()
            ok = ok * prop_ok.repeat_interleave(num_classes - 1)
            top_s, top_i = torch.where(ok > 0, probs, -1.0 + 0 * probs).topk(cand)
            c_boxes, c_labels, c_ok = cls_boxes[top_i], labels[top_i], (top_s >= 0).float()
            keep = self.nms(c_boxes, c_ok, c_labels, rh.nms_thresh, cand)
            det_s, det_i = torch.where(keep > 0, top_s, -1.0 + 0 * top_s).topk(detections)
            det_ok = (det_s >= 0).float()
            det_boxes = c_boxes[det_i] * det_ok[:, None]
            det_labels = c_labels[det_i] * det_ok

            flat = torch.cat([feats[k][0].permute(1, 2, 0).reshape(-1, channels) for k in mask_names])
            mpooled = self.roi_align(flat, det_boxes, detections, mask_names, mask_scales, mask_map,
                                     rh.mask_roi_pool.output_size[0], rh.mask_roi_pool.sampling_ratio)
            mlogits = self.mask_predictor(self.mask_head(mpooled))  # [D, K, M, M]
            pick = (torch.arange(num_classes, dtype=torch.float32)[None, :] == det_labels[:, None]).float()
            masks = torch.sigmoid((mlogits * pick[:, :, None, None]).sum(dim=1)) * det_ok[:, None, None]
            return (det_boxes[None], (det_s * det_ok)[None], det_labels[None], det_ok.sum().reshape(1),
                    masks[None])

    return Graph().eval()


def cluster_nms(boxes, valid, group, threshold: float, n: int, iterations: int):
    """Greedy NMS on score-sorted ``boxes`` [n, 4] within each ``group``, as a fixed number of Cluster-NMS steps:
    kept mask [n] (float). Sizes are Python ints, never read from tensors, so traced graphs hold no shape
    arithmetic. Exact once ``iterations`` reaches :func:`nms_iterations_needed`."""
    import torch

    # torchvision's batched_nms separates groups by shifting each by group * (max coordinate + 1) and rounds
    # the shifted coordinates; doing the same keeps borderline overlaps on the same side of the threshold
    top = (boxes * valid[:, None]).amax()
    boxes = boxes + (group * (top + 1.0))[:, None]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-12)
    earlier = torch.triu(torch.ones(n, n), diagonal=1)  # [i, j] = 1 where i comes before j
    same = (group[:, None] == group[None, :]).float()
    over = (iou > threshold).float() * earlier * same * valid[:, None]
    keep = valid
    for _ in range(iterations):
        keep = valid * (1.0 - (over * keep[:, None]).amax(dim=0))
    return keep


def configure_eager(model, pre_nms_top_n: int, proposals: int, detections: int):
    """Set torchvision's test-time counts so its eager output is what the static graph truncates to."""
    model.rpn._pre_nms_top_n["testing"] = pre_nms_top_n
    model.rpn._post_nms_top_n["testing"] = proposals
    model.roi_heads.detections_per_img = detections
    return model


def valid_detections(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first ``num_detections`` rows: boxes, scores, labels (int), masks [n, M, M]."""
    n = int(round(float(np.asarray(out["num_detections"]).reshape(-1)[0])))
    return {"boxes": np.asarray(out["boxes"])[:n], "scores": np.asarray(out["scores"])[:n],
            "labels": np.rint(np.asarray(out["classes"])[:n]).astype(np.int64), "masks": np.asarray(out["masks"])[:n]}


def paste_masks(masks: np.ndarray, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per-box M x M mask probabilities into [n, 1, H, W] image masks, exactly as torchvision's eager inference
    does (its ``paste_masks_in_image``, padding 1)."""
    import torch
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    m = torch.from_numpy(np.ascontiguousarray(masks, np.float32))[:, None]
    b = torch.from_numpy(np.ascontiguousarray(boxes, np.float32))
    if m.shape[0] == 0:
        return np.zeros((0, 1, height, width), np.float32)
    return paste_masks_in_image(m, b, (height, width), padding=1).numpy()


def paste_mask_app(mask: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """One box's M x M mask probabilities in the ``size`` x ``size`` input, step by step as the bundle's Kotlin and
    Swift code does it (float32 maths, no torch) — the same result as :func:`paste_masks` (torchvision's
    ``paste_masks_in_image``, padding 1), which ``check`` uses; the tests hold the two together.

    1. pad the mask with a zero border of 1: P = M + 2 rows and columns;
    2. grow the box about its centre by P / M and truncate its corners to integers (toward zero, like torch's
       int64 cast): x0, y0, x1, y1; the mask covers w = max(x1 - x0 + 1, 1) by h = max(y1 - y0 + 1, 1) pixels;
    3. every input pixel (x, y) inside both the box and the image samples the padded mask bilinearly
       (half-pixel centres, source clamped at 0 — ``F.interpolate(..., align_corners=False)``) at
       ``sx = P / w * (x - x0 + 0.5) - 0.5``, ``sy = P / h * (y - y0 + 0.5) - 0.5``.
    A pixel belongs to the instance where the probability is > 0.5."""
    m = np.asarray(mask, np.float32)
    n = m.shape[-1]
    p = n + 2
    padded = np.zeros((p, p), np.float32)
    padded[1:-1, 1:-1] = m
    b = np.asarray(box, np.float32)
    scale = np.float32(p) / np.float32(n)
    w_half, h_half = (b[2] - b[0]) * np.float32(0.5) * scale, (b[3] - b[1]) * np.float32(0.5) * scale
    xc, yc = (b[2] + b[0]) * np.float32(0.5), (b[3] + b[1]) * np.float32(0.5)
    x0, x1, y0, y1 = (int(v) for v in (xc - w_half, xc + w_half, yc - h_half, yc + h_half))  # int(): toward zero
    w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    out = np.zeros((size, size), np.float32)
    sw, sh = np.float32(p) / np.float32(w), np.float32(p) / np.float32(h)  # float32 division, as torch's kernel
    for y in range(max(y0, 0), min(y1 + 1, size)):
        sy = max(sh * np.float32(y - y0 + 0.5) - np.float32(0.5), np.float32(0))
        iy = int(sy)
        iy1, ly = min(iy + 1, p - 1), sy - np.float32(iy)
        for x in range(max(x0, 0), min(x1 + 1, size)):
            sx = max(sw * np.float32(x - x0 + 0.5) - np.float32(0.5), np.float32(0))
            ix = int(sx)
            ix1, lx = min(ix + 1, p - 1), sx - np.float32(ix)
            top = (1 - lx) * padded[iy, ix] + lx * padded[iy, ix1]
            bottom = (1 - lx) * padded[iy1, ix] + lx * padded[iy1, ix1]
            out[y, x] = (1 - ly) * top + ly * bottom
    return out


def nms_iterations_needed(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float) -> int:
    """How many Cluster-NMS iterations these candidates need to reach greedy NMS's answer (its fixed point)."""
    order = np.argsort(-scores, kind="stable")
    b, g = boxes[order], groups[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-12)
    over = (iou > threshold) & np.triu(np.ones((len(b), len(b)), bool), 1) & (g[:, None] == g[None, :])
    keep = np.ones(len(b), bool)
    for it in range(1, len(b) + 2):
        new = ~(over & keep[:, None]).any(axis=0)
        if (new == keep).all():
            return it
        keep = new
    return len(b) + 1

