"""NNCF post-training quantization of a PyTorch model, and its hand-over to the int8 targets.

Shared by the ONNX (QDQ) and OpenVINO (IR int8) targets and by ``edgeseg quantize``. Settings that make the
result exportable everywhere: overflow fix off (a 7-bit "half range" quantizer cannot be written as ONNX
QuantizeLinear/DequantizeLinear), 8-bit symmetric weights per channel, activations per tensor.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from exporters.base import ExporterError, batches


def import_nncf():
    from exporters.native import preload_triton

    preload_triton()  # nncf may import TensorFlow through its backends' checks
    try:
        import nncf
    except ImportError as e:
        raise ExporterError(f"NNCF quantization needs nncf ({e}); pip install 'edgeseg[quantize]'") from None
    import logging
    import os

    # NNCF compiles its C++ fake-quantize kernels on first use (62 s on 2 idle cores; `make install` builds them
    # ahead) and gives up after 60 s by default: on a busy machine the first quantization failed with
    # ExtensionLoaderTimeoutException. Wait for the compiler instead; the user's own setting wins.
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")
    if not os.environ.get("EDGESEG_DEBUG"):  # NNCF logs INFO lines to stdout, which --json output owns
        nncf.set_log_level(logging.WARNING)
    return nncf


def build_extensions() -> None:
    """Compile NNCF's CPU kernels into torch's extension cache now (``make install`` calls this) so that the
    first ``edgeseg quantize`` does not pay a minute of C++ compilation; without a compiler NNCF falls back to
    plain torch operations, which is what it would do at run time too."""
    import_nncf()
    import nncf.torch
    import nncf.torch.quantization.extensions  # noqa: F401  (registers the loaders force_build walks)

    nncf.torch.force_build_cpu_extensions()


def ptq(model, calibration: Sequence[np.ndarray], preset: str = "performance",
        ignored: Sequence[str] = (), fast_bias_correction: bool = True) -> Any:
    """``nncf.quantize`` on ``model`` (eval, CPU) with every calibration image; returns the quantized model
    (the same class, with NNCF's quantizers hooked in: it runs, trains and exports like the original)."""
    import torch

    nncf = import_nncf()
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, OverflowFix,
                                                         QuantizationParameters)

    samples = [torch.from_numpy(np.ascontiguousarray(b)) for b in batches(calibration)]
    if not samples:
        raise ExporterError("NNCF quantization needs calibration images; none were given")
    from exporters.native import quiet_native

    scope = nncf.IgnoredScope(names=list(ignored), validate=True) if ignored else None
    try:
        with quiet_native():  # NNCF logs and draws progress bars on stdout, which --json output owns
            return nncf.quantize(model.eval().cpu(), nncf.Dataset(samples), preset=nncf.QuantizationPreset(preset),
                             subset_size=len(samples), fast_bias_correction=fast_bias_correction,
                             ignored_scope=scope,
                             advanced_parameters=AdvancedQuantizationParameters(
                                 overflow_fix=OverflowFix.DISABLE,
                                 # per tensor, as the module docstring says: left unset, NNCF gave a ReLU that
                                 # feeds a depthwise conv a per-channel quantizer in onnx2torch-translated
                                 # graphs, and onnxruntime's QLinearConv refuses a per-channel input zero point
                                 activations_quantization_params=QuantizationParameters(per_channel=False)))
    except nncf.ValidationError as e:  # an ignored-scope name that is not in the graph, among others
        raise ExporterError(f"NNCF rejected the quantization settings: {e}") from None
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as e:
        # e.g. a graph translated from ONNX whose constant tensors feed ops directly: NNCF's graph builder finds no
        # node for them ("None cannot be a node")
        raise ExporterError(f"NNCF post-training quantization could not handle this model ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:300] if str(e) else ''}); int8 that does not use NNCF: "
                            f"TFLite int8 (TF converter) and Core ML int8 weights") from None


def is_quantized(model) -> bool:
    """Whether NNCF quantizers are hooked into ``model``."""
    from nncf.torch.quantization.layers import BaseQuantizer

    return any(isinstance(m, BaseQuantizer) for m in model.modules())


def for_export(model, example: np.ndarray) -> Any:
    """The quantized model with NNCF's training hooks stripped and every quantizer written as ONNX
    QuantizeLinear/DequantizeLinear (torch's own fake-quantize where it can, NNCF's QDQ export elsewhere)."""
    import torch

    nncf = import_nncf()
    from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

    from exporters.native import quiet_native

    with quiet_native():
        stripped = nncf.strip(model.eval().cpu(), do_copy=True,
                              example_input=torch.from_numpy(np.asarray(example, np.float32)))
    for m in stripped.modules():
        if isinstance(m, BaseQuantizer):  # quantizers strip could not turn into torch FakeQuantize modules
            m.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    return stripped.eval()


def float_weights(quantized, template) -> dict[str, Any]:
    """The float weights inside a quantized model (bias-corrected by PTQ, or fine-tuned by QAT), as a state
    dict of the plain ``template`` model: what a converter with its own int8 quantizer (TF Lite, Core ML) takes."""
    own = quantized.state_dict()
    keys = template.state_dict().keys()
    missing = [k for k in keys if k not in own]
    if missing:
        raise ExporterError(f"the quantized model lacks weights of the original ({', '.join(missing[:3])})")
    return {k: own[k].detach().clone() for k in keys}


def int8_model(model, example: np.ndarray, options, details: dict) -> Any:
    """The model an int8 ONNX/OpenVINO export converts: NNCF PTQ on ``options.calibration`` unless the model is
    already quantized (``options.quantized``), stripped for export; ``details`` records who quantized it."""
    if not options.quantized:
        model = ptq(model, options.calibration)
    details["quantizer"] = options.metadata.get("quantized_by", "NNCF post-training quantization")
    return for_export(model, example)
