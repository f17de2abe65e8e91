"""Export targets, one module each; this package never imports ``edgeseg``.

``TARGETS`` maps a target name to its :class:`~exporters.base.Target`. The table of targets and
precisions is what the CLI reads for its choices and typo suggestions.
"""

from __future__ import annotations

from exporters import coreml, executorch, onnx, openvino, tflite
from exporters.base import ExporterError, ExportOptions, ExportResult, Normalization, Runner, Target, ToolchainMissing

TARGETS: dict[str, Target] = {t.name: t for t in (tflite.TARGET, coreml.TARGET, onnx.TARGET, openvino.TARGET,
                                                  executorch.TARGET)}

__all__ = ["TARGETS", "ExportOptions", "ExportResult", "ExporterError", "Normalization", "Runner", "Target",
           "ToolchainMissing"]
