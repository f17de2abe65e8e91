"""Mask R-CNN builders: torchvision's implementation with a ResNet-50-FPN or a MobileNetV3-Large-FPN backbone."""

from __future__ import annotations

from typing import Any

from edgeseg.core.errors import UsageError

BACKBONES = ("resnet50", "mobilenet_v3_large")


def build_maskrcnn(num_classes: int, backbone: str = "mobilenet_v3_large", min_size: int = 512,
                   max_size: int | None = None, weights_backbone: Any = None,
                   mask_layers: tuple[int, ...] | None = None, **kwargs: Any):
    """A Mask R-CNN for ``num_classes`` classes (background included, as torchvision counts them).

    ``min_size``/``max_size``: torchvision's resize of the shorter/longer side (a fixed square input for
    ``min_size == max_size``). ``weights_backbone``: None (random init; offline) or torchvision's ImageNet
    weights enum (downloads). Other keyword arguments go to torchvision's ``MaskRCNN`` (e.g.
    ``box_detections_per_img``, ``rpn_post_nms_top_n_test``).

    Anchors are torchvision's (32-512 px) for inputs of 512 px and more; smaller inputs get them scaled by
    ``min_size / 512`` (at least 4 px), or objects of a 64-px image would have no anchor near their size.
    """
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import mobilenet_backbone

    if num_classes < 2:
        raise UsageError(f"Mask R-CNN needs at least 2 classes (background + one), got {num_classes}")
    max_size = max_size or min_size
    scale = min(1.0, min_size / 512)
    sizes = tuple(max(4, int(round(s * scale))) for s in (32, 64, 128, 256, 512))
    if mask_layers:
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

        kwargs["mask_head"] = MaskRCNNHeads(256, tuple(mask_layers), 1)  # 256: the FPN's channels
        kwargs["mask_predictor"] = MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes)
        # with its own predictors torchvision wants num_classes unset; 1024: its box head's representation size
        kwargs["box_predictor"] = FastRCNNPredictor(1024, num_classes)
    if backbone == "resnet50":
        if scale < 1 and "rpn_anchor_generator" not in kwargs:
            kwargs["rpn_anchor_generator"] = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * 5)
        if mask_layers:  # torchvision's builder sets num_classes on its own predictor: give it ours instead
            return MaskRCNN(_resnet50_fpn(weights_backbone), num_classes=None, min_size=min_size, max_size=max_size,
                            **kwargs)
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=weights_backbone, num_classes=num_classes,
                                     min_size=min_size, max_size=max_size, **kwargs)
    if backbone == "mobilenet_v3_large":
        # torchvision's mobile detector reads stride 32 twice (its layers 4, 5); images under 320 px also need
        # stride 8, or a 64-px image leaves 4x4 and 2x2 feature maps that cannot place small objects
        layers = [2, 3, 5] if min_size < 320 else None  # feature blocks 4, 7, 16: strides 8, 16, 32
        body = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=weights_backbone, fpn=True,
                                  trainable_layers=6, returned_layers=layers)
        # torchvision's fasterrcnn_mobilenet_v3_large_fpn anchors: 5 sizes x 3 ratios on every feature map
        maps = len(layers or [0, 0]) + 1  # + the FPN's max-pooled level
        anchors = (kwargs.pop("rpn_anchor_generator", None)
                   or AnchorGenerator((sizes,) * maps, ((0.5, 1.0, 2.0),) * maps))
        return MaskRCNN(body, num_classes=None if mask_layers else num_classes, rpn_anchor_generator=anchors,
                        min_size=min_size, max_size=max_size, **kwargs)
    raise UsageError(f"unknown Mask R-CNN backbone '{backbone}'; choose one of {', '.join(BACKBONES)}")


def _resnet50_fpn(weights_backbone: Any):
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import misc

    body = resnet50(weights=weights_backbone, norm_layer=misc.FrozenBatchNorm2d if weights_backbone else None)
    return _resnet_fpn_extractor(body, 3 if weights_backbone else 5)


def use_iou_balanced_loss(model, eta: float = 1.5):
    """Make ``model``'s box classifier train with the IoU-balanced cross-entropy
    (:func:`edgeseg.losses.iou_balanced.iou_balanced_cross_entropy`): positives weighted by ``IoU^eta`` with the
    ground-truth box they were matched to. torchvision's RoI heads are kept; the sampled proposals' IoUs are
    recovered from their regression targets, the classifier logits are captured with a forward hook, and
    ``loss_classifier`` is recomputed. Returns a function that restores torchvision's loss (call it before
    copying or exporting the model). ``eta = 0`` gives torchvision's loss exactly (tested)."""
    import torch

    from edgeseg.losses.iou_balanced import iou_balanced_cross_entropy

    if eta < 0:
        raise UsageError(f"IoU-balanced loss: eta must be >= 0, got {eta}")
    rh = model.roi_heads
    state: dict = {}
    select, forward = rh.select_training_samples, rh.forward

    def select_training_samples(proposals, targets):
        out = select(proposals, targets)
        props, _, labels, reg = out
        gts = [rh.box_coder.decode_single(r, p) for r, p in zip(reg, props)]
        state["labels"] = torch.cat(labels)
        state["ious"] = torch.cat([_paired_iou(p, g) for p, g in zip(props, gts)])
        return out

    def capture(module, inputs, outputs):
        if rh.training:
            state["logits"] = outputs[0]

    def balanced_forward(*args, **kwargs):
        result, losses = forward(*args, **kwargs)
        if rh.training and "loss_classifier" in losses:
            losses["loss_classifier"] = iou_balanced_cross_entropy(state["logits"], state["labels"], state["ious"],
                                                                   eta)
        return result, losses

    hook = rh.box_predictor.register_forward_hook(capture)
    rh.select_training_samples, rh.forward = select_training_samples, balanced_forward

    def restore() -> None:
        hook.remove()
        del rh.select_training_samples, rh.forward  # the instance attributes: the class's methods again

    return restore


def _paired_iou(a, b):
    """IoU of a[i] with b[i]."""
    lt = a[:, :2].maximum(b[:, :2])
    rb = a[:, 2:].minimum(b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-12)


def load_backbone_from_run(model, run) -> int:
    """Initialize a MobileNetV3-Large Mask R-CNN's backbone from a trained edgeseg semantic run whose encoder is
    MobileNetV3-Large (LR-ASPP, DeepLab...): the same torchvision blocks, so every tensor maps by name
    (``encoder.blocks.N...`` -> ``backbone.body.N...``); dilation changes no weight shape. Offline and fast: a
    segmentation run on the same images is a far better start than random weights on a CPU. Returns the number
    of tensors loaded."""
    from edgeseg.core.errors import CheckpointError
    from edgeseg.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run)
    body = model.backbone.body.state_dict()
    if "0.0.weight" not in body or tuple(body["0.0.weight"].shape) != (16, 3, 3, 3):
        raise UsageError("--backbone-from needs the mobilenet_v3_large backbone")
    mapped = {k.removeprefix("encoder.blocks."): v for k, v in ckpt.weights.items() if k.startswith("encoder.blocks.")}
    missing = [k for k in body if k not in mapped or tuple(mapped[k].shape) != tuple(body[k].shape)]
    if missing:
        raise CheckpointError(f"run '{run}' ({ckpt.config.model}, encoder "
                              f"{ckpt.config.model_kwargs.get('encoder', 'default')}) does not hold a MobileNetV3-"
                              f"Large encoder that fits: {len(missing)} of {len(body)} backbone tensors missing or "
                              f"shaped differently (first: {missing[0]})")
    model.backbone.body.load_state_dict({k: mapped[k] for k in body})
    return len(body)
