"""Instance segmentation (Mask R-CNN): models, training and COCO-style evaluation.

Built on torchvision's Mask R-CNN. This package is the training/evaluation half of the Mask R-CNN work; the
export-ready inference graph (fixed proposal/detection counts, static NMS and RoIAlign) is not built yet.
"""
