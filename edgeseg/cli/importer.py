"""``edgeseg import``: a run directory for a model edgeseg did not train."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeseg.cli.common import EPILOG, common, parse_opt
from edgeseg.core.errors import EXIT_OK, UsageError

def add(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("import", help="a run directory for a model edgeseg did not train", epilog=EPILOG,
                       formatter_class=fmt,
                       description="Write RUN/checkpoint.pt for torchvision's segmentation models or any nn.Module "
                       "factory, TorchScript or ONNX file, so export, check, quantize, report and bundle work on it. MODEL: "
                       "torchvision:NAME[?weights=ENUM] (e.g. torchvision:lraspp_mobilenet_v3_large?weights="
                       "COCO_WITH_VOC_LABELS_V1; downloads when online), smp:ARCH?encoder=NAME (segmentation_models_"
                       "pytorch, with --weights), python:package.module:factory, torchscript:FILE or onnx:FILE (translated to "
                       "PyTorch by onnx2torch for the targets; check compares with the file in onnxruntime).")
    common(p)
    p.add_argument("model", metavar="MODEL", help="torchvision:NAME[?weights=ENUM], smp:ARCH?encoder=NAME, "
                   "python:package.module:factory, torchscript:FILE or onnx:FILE")
    p.add_argument("-o", "--output", type=Path, required=True, help="run directory to create")
    p.add_argument("--data", required=True,
                   help="the images int8 calibration and check use: any dataset spec, or folder:IMAGES for images "
                   "without masks (check then measures parity only)")
    p.add_argument("--weights", type=Path, help="a local state_dict (.pth), loaded with weights_only=True")
    p.add_argument("--classes", type=Path, help="class names, one per line ('name' or 'name R G B')")
    p.add_argument("--num-classes", type=int, help="output classes when neither --classes nor the weights say")
    p.add_argument("--mean", help="normalization mean, R,G,B in 0-1 (default ImageNet's or the weights')")
    p.add_argument("--std", help="normalization std, R,G,B (default ImageNet's or the weights')")
    p.add_argument("--image-size", metavar="SIZE",
                   help="export input size: a side or HxW (default 256; an ONNX file's fixed size)")
    p.add_argument("--resize", choices=("letterbox", "stretch", "crop"), default="letterbox",
                   help="how frames of another size fit the input (default letterbox)")
    p.add_argument("--binary", action="store_true", help="the model has one sigmoid-logit channel (foreground > 0)")
    p.add_argument("--upsample", action="store_true",
                   help="add a bilinear upsampling to the input size for outputs smaller than the input")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="argument for a python: factory (repeatable; values parsed as JSON when they can be)")


def run(a: argparse.Namespace) -> int:
    from edgeseg.steps.importer import check_data_spec, import_model

    def triple(flag: str, v: str | None):
        if v is None:
            return None
        try:
            t = tuple(float(x) for x in v.split(","))
        except ValueError:
            t = ()
        if len(t) != 3:
            raise UsageError(f"{flag} takes three numbers R,G,B (0-1 scale), got '{v}'")
        return t

    import_model(a.output, a.model, data=check_data_spec(a.data), weights=a.weights, classes=a.classes,
                 num_classes=a.num_classes, mean=triple("--mean", a.mean), std=triple("--std", a.std),
                 image_size=a.image_size, resize=a.resize, binary=a.binary, upsample=a.upsample,
                 model_args=parse_opt(a.model_arg, "--model-arg"), log=(lambda s: None) if a.quiet else print)
    return EXIT_OK
