"""Mask R-CNN builders: torchvision's implementation with a ResNet-50-FPN or a MobileNetV3-Large-FPN backbone."""

from __future__ import annotations

from typing import Any

from edgeseg.errors import UsageError

BACKBONES = ("resnet50", "mobilenet_v3_large")


def build_maskrcnn(num_classes: int, backbone: str = "mobilenet_v3_large", min_size: int = 512,
                   max_size: int | None = None, weights_backbone: Any = None,
                   mask_layers: tuple[int, ...] | None = None, **kwargs: Any):
    """A Mask R-CNN for ``num_classes`` classes (background included, as torchvision counts them).

    ``min_size``/``max_size``: torchvision's resize of the shorter/longer side (a fixed square input for
    ``min_size == max_size``). ``weights_backbone``: None (random init; offline) or torchvision's ImageNet
    weights enum (downloads). Other keyword arguments go to torchvision's ``MaskRCNN`` (e.g.
    ``box_detections_per_img``, ``rpn_post_nms_top_n_test``).
    """
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import mobilenet_backbone

    if num_classes < 2:
        raise UsageError(f"Mask R-CNN needs at least 2 classes (background + one), got {num_classes}")
    max_size = max_size or min_size
    if mask_layers:
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

        kwargs["mask_head"] = MaskRCNNHeads(256, tuple(mask_layers), 1)  # 256: the FPN's channels
        kwargs["mask_predictor"] = MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes)
        # with its own predictors torchvision wants num_classes unset; 1024: its box head's representation size
        kwargs["box_predictor"] = FastRCNNPredictor(1024, num_classes)
    if backbone == "resnet50":
        if mask_layers:  # torchvision's builder sets num_classes on its own predictor: give it ours instead
            return MaskRCNN(_resnet50_fpn(weights_backbone), num_classes=None, min_size=min_size, max_size=max_size,
                            **kwargs)
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=weights_backbone, num_classes=num_classes,
                                     min_size=min_size, max_size=max_size, **kwargs)
    if backbone == "mobilenet_v3_large":
        body = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=weights_backbone, fpn=True,
                                  trainable_layers=6)
        # torchvision's fasterrcnn_mobilenet_v3_large_fpn anchors: 3 feature maps, 5 sizes x 3 ratios each
        anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
        return MaskRCNN(body, num_classes=None if mask_layers else num_classes, rpn_anchor_generator=anchors,
                        min_size=min_size, max_size=max_size, **kwargs)
    raise UsageError(f"unknown Mask R-CNN backbone '{backbone}'; choose one of {', '.join(BACKBONES)}")


def _resnet50_fpn(weights_backbone: Any):
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import misc

    body = resnet50(weights=weights_backbone, norm_layer=misc.FrozenBatchNorm2d if weights_backbone else None)
    return _resnet_fpn_extractor(body, 3 if weights_backbone else 5)
