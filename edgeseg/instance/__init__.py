"""Instance segmentation (Mask R-CNN): models, training, COCO-style evaluation, the export-ready graph
(:mod:`~edgeseg.instance.static_graph`), its export to ONNX/TFLite/Core ML (:mod:`~edgeseg.instance.export`)
and instance parity (:mod:`~edgeseg.instance.parity`).
"""
