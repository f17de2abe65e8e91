"""``edgeseg import``: a run directory for a model edgeseg did not train.

The run holds an ordinary checkpoint (``model = "imported"``, the source that rebuilds the architecture in
``model_kwargs``, the weights, classes, preprocessing and provenance), so ``export``, ``check``,
``quantize``, ``report`` and ``bundle`` work on it unchanged. Sources:

* ``torchvision:NAME[?weights=ENUM]`` -- torchvision's segmentation models; ``weights=`` names a weights enum
  (``COCO_WITH_VOC_LABELS_V1``: downloads when online; its categories and normalization are used), or
  ``--weights FILE.pth`` a local state_dict; neither = random weights (said in the provenance).
* ``smp:ARCH?encoder=NAME[&option=value...]`` -- segmentation_models_pytorch (``Unet``, ``FPN``,
  ``DeepLabV3Plus``, ...; options such as ``decoder_channels=64,32,16,8,4``) with ``--weights`` the
  state_dict of the model you trained with it (``--classes``/``--num-classes`` say how many classes).
* ``python:package.module:factory`` -- any function returning an ``nn.Module`` (``--model-arg k=v`` passes
  arguments), with an optional ``--weights`` state_dict.
* ``torchscript:FILE`` -- a ``torch.jit.script``/``trace`` archive; it is copied into the run (the graph lives
  there) and exported through ONNX (TFLite, OpenVINO) and ``torch.jit.trace`` (Core ML) like any run.
* ``onnx:FILE`` -- an ONNX model (one NCHW image input); it is copied into the run, translated to PyTorch by
  onnx2torch so that every target and ``quantize`` take it, and ``check`` compares exports with the original
  file in onnxruntime. The import measures the translation against onnxruntime on the run's images and refuses
  one that changes masks. The input size is the file's when it is static.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import torch

from edgeseg.core.image_size import parse_image_size
from edgeseg.train.config import TrainConfig
from edgeseg.data.base import ClassInfo, default_colors
from edgeseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from edgeseg.core.errors import CheckpointError, UsageError
from edgeseg.models.imported import IMPORTED, build_imported

SOURCES = ("torchvision", "smp", "python", "torchscript", "onnx")
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.source.onnx"
#: the least argmax agreement (%) between the onnx2torch translation and onnxruntime that an ONNX import accepts:
#: the translation runs the same float32 ops (measured: max |Δlogit| < 1e-6, 100 % on every model tried), so a
#: lower figure means an op was translated wrongly
MIN_TRANSLATION_AGREEMENT = 99.9


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"--weights '{path}' does not exist") from None
    except Exception as e:  # noqa: BLE001 - a damaged archive makes the weights-only unpickler raise anything
        raise CheckpointError(f"--weights '{path}' is not a state_dict the safe loader (weights_only=True) reads: "
                              f"{str(e).splitlines()[0][:200]}") from None
    if isinstance(d, dict) and isinstance(d.get("state_dict"), dict):
        d = d["state_dict"]  # Lightning-style wrappers
    if not isinstance(d, dict) or not all(isinstance(v, torch.Tensor) for v in d.values()):
        raise CheckpointError(f"--weights '{path}' does not hold a state_dict (a mapping of names to tensors)")
    return d


def _load(net: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Strict load; a mismatch names the missing, unexpected and misshapen keys."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                parts.append(f"{name}: {', '.join(keys[:5])}" + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""))
        raise CheckpointError(f"{what} does not fit the model: " + "; ".join(parts))
    net.load_state_dict(state)


def _value(v: str) -> Any:
    """An option value: an int, a float, a comma-separated list of those, true/false, or the string."""
    def one(x: str) -> Any:
        for conv in (int, float):
            try:
                return conv(x)
            except ValueError:
                pass
        return {"true": True, "false": False}.get(x.lower(), x)
    return [one(x) for x in v.split(",")] if "," in v else one(v)


def _classes(path: Path | None, names: list[str] | None, n: int | None) -> list[ClassInfo] | None:
    if path is not None:
        from edgeseg.data.io import parse_classes_txt

        if not Path(path).is_file():
            raise UsageError(f"--classes '{path}' does not exist")
        return parse_classes_txt(Path(path))
    if names is not None:
        return [ClassInfo(c, col) for c, col in zip(names, default_colors(len(names)))]
    if n is not None:
        return [ClassInfo(f"class{i}", col) for i, col in enumerate(default_colors(n))]
    return None


def _torchvision_weights(name: str, enum: str):
    import torchvision.models as tvm

    try:
        weights_enum = tvm.get_model_weights(name)
    except (ValueError, KeyError):
        raise UsageError(f"torchvision model '{name}' has no weights enum") from None
    try:
        return weights_enum[enum]
    except KeyError:
        from edgeseg.core.registry import suggest

        have = [w.name for w in weights_enum]
        raise UsageError(f"torchvision:{name}: no weights '{enum}'{suggest(enum, have)}; it has {', '.join(have)}") \
            from None


def import_model(output: Path, spec: str, *, data: str, weights: Path | None = None, classes: Path | None = None,
                 num_classes: int | None = None, mean: tuple[float, float, float] | None = None,
                 std: tuple[float, float, float] | None = None, image_size: str | int | None = None,
                 resize: str = "letterbox", binary: bool = False, upsample: bool = False,
                 model_args: dict[str, Any] | None = None, log: Callable[[str], None] = print) -> Path:
    """Write ``output/checkpoint.pt`` for the model named by ``spec``; returns its path."""
    from edgeseg.core.atomic import atomic_path
    from edgeseg.data import parse_spec
    from edgeseg.train.checkpoint import CHECKPOINT_NAME, Checkpoint, save_checkpoint

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o '{output}' is a file; give a directory for the run")
    if (output / CHECKPOINT_NAME).exists():
        raise UsageError(f"run directory '{output}' already holds a checkpoint; import into a new -o directory")
    source, _, rest = spec.partition(":")
    if source not in SOURCES or not rest:
        raise UsageError(f"MODEL '{spec}': give torchvision:NAME[?weights=ENUM], smp:ARCH?encoder=NAME, "
                         f"python:package.module:factory, torchscript:FILE or onnx:FILE")
    if source == "onnx":
        image_size = _onnx_size(Path(rest).expanduser(), image_size)
    h, w = parse_image_size(256 if image_size is None else image_size)
    provenance: dict[str, Any] = {"source": spec}
    state = None
    cls = _classes(classes, None, None)
    if source == "torchvision":
        _, name, opts = parse_spec(f"x:{rest}")
        kw: dict[str, Any] = {"source": "torchvision", "name": name}
        enum = opts.pop("weights", None)
        if opts:
            raise UsageError(f"MODEL '{spec}': unknown option(s) {', '.join(opts)}; torchvision takes weights=ENUM")
        if enum and weights:
            raise UsageError("give the weights as torchvision:NAME?weights=ENUM or as --weights FILE, not both")
        if enum:
            wts = _torchvision_weights(name, enum)
            cls = cls or _classes(None, list(wts.meta["categories"]), None)
            t = wts.transforms()
            mean, std = mean or tuple(t.mean), std or tuple(t.std)
            try:
                state = wts.get_state_dict(progress=False, check_hash=True)
            except Exception as e:  # noqa: BLE001 - urllib/ssl/http errors all mean: no download
                raise UsageError(f"torchvision:{name}?weights={enum} needs to download {wts.url} and could not "
                                 f"({type(e).__name__}); download it where you are online and pass --weights FILE.pth") \
                    from None
            provenance["weights"] = f"torchvision {name} {enum} ({wts.url})"
        elif weights:
            state = _state_dict(weights)
        kw["aux"] = bool(state) and any(k.startswith("aux_classifier.") for k in state)
        if state is not None:  # the class count the weights were trained for
            heads = [v for k, v in state.items() if k.startswith("classifier.") and k.endswith("weight") and v.ndim == 4]
            num_classes = num_classes or (int(heads[-1].shape[0]) if heads else None)
            state = {f"net.{k}": v for k, v in state.items()}
    elif source == "smp":
        _, arch, opts = parse_spec(f"x:{rest}")
        encoder = opts.pop("encoder", "resnet34")  # smp's default encoder
        kw = {"source": "smp", "arch": arch, "encoder": encoder, "options": {k: _value(v) for k, v in opts.items()}}
        if weights:
            state = {f"net.{k}": v for k, v in _state_dict(weights).items()}
            heads = [v for k, v in state.items() if k.startswith("net.segmentation_head.") and v.ndim == 4]
            num_classes = num_classes or (int(heads[-1].shape[0]) if heads else None)
    elif source == "torchscript":
        src = Path(rest).expanduser()
        if not src.is_file():
            raise UsageError(f"torchscript:{rest}: no such file")
        if weights:
            raise UsageError("a TorchScript file holds its weights; drop --weights")
        kw = {"source": "torchscript", "file": TORCHSCRIPT_FILE,
              "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}
        provenance["weights"] = f"{src} (TorchScript, sha256 {kw['sha256']})"
    elif source == "onnx":
        if weights:
            raise UsageError("an ONNX file holds its weights; drop --weights")
        src = Path(rest).expanduser()
        kw = {"source": "onnx", "file": ONNX_FILE, "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}
        provenance["weights"] = f"{src} (ONNX, sha256 {kw['sha256']})"
    else:
        kw = {"source": "python", "factory": rest, "kwargs": dict(model_args or {})}
        if weights:
            state = {f"net.{k}": v for k, v in _state_dict(weights).items()}
    n = len(cls) if cls else (num_classes or (2 if binary else None))
    if n is None and source in ("torchvision", "smp"):
        raise UsageError(f"{spec}: say how many classes: --classes FILE or --num-classes N"
                         + (" (or ?weights=ENUM)" if source == "torchvision" else ""))
    if binary:
        kw["binary"] = True
        n = 2
        cls = cls or [ClassInfo("background", (0, 0, 0)), ClassInfo("foreground", (230, 25, 75))]
    if upsample:
        kw["upsample"] = True
    in_file = source in ("torchscript", "onnx")  # the graph is a file, copied into the run below
    model = build_imported(n or 1, base=Path(rest).expanduser().parent, **{**kw, "file": Path(rest).name}) \
        if in_file else build_imported(n or 1, **kw)
    if state is not None:
        _load(model, state, f"--weights '{weights}'" if weights else spec)
        provenance.setdefault("weights", f"{weights} (sha256 {hashlib.sha256(Path(weights).read_bytes()).hexdigest()})"
                              if weights else spec)
    elif not in_file:
        provenance["weights"] = "random initialization (no weights given)"
        log(f"{spec}: no weights given; the run holds randomly initialized weights")
    model.eval()
    with torch.no_grad():
        try:
            y = model(torch.zeros(1, 3, h, w))
        except Exception as e:  # noqa: BLE001 - the user's module: report whatever it raises
            raise UsageError(f"{spec} does not run on a 1x3x{h}x{w} input: {type(e).__name__}: {e}") from None
    if not isinstance(y, torch.Tensor) or y.ndim != 4:
        raise UsageError(f"{spec} returns {type(y).__name__}{tuple(y.shape) if isinstance(y, torch.Tensor) else ''}; "
                         f"edgeseg needs [N, classes, H, W] logits (or a dict with 'out')")
    if tuple(y.shape[-2:]) != (h, w):
        raise UsageError(f"{spec} returns {tuple(y.shape[-2:])} masks for a {h}x{w} input; pass --upsample to add a "
                         f"bilinear upsampling to the input size in the graph")
    if y.shape[1] == 1 and not binary:
        raise UsageError(f"{spec} has one output channel: pass --binary (a sigmoid logit: foreground where > 0)")
    n = int(y.shape[1])
    cls = cls or _classes(None, None, n)
    if len(cls) != n:
        raise UsageError(f"the model outputs {n} classes but the class list has {len(cls)} "
                         f"({', '.join(c.name for c in cls[:6])}...)")
    _check_data_classes(data, f"{h}x{w}", n)
    cfg = TrainConfig(model=IMPORTED, model_kwargs=kw, data=data, image_size=f"{h}x{w}", resize=resize, epochs=1)
    pre = Preprocess(h, w, tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD), resize)  # type: ignore[arg-type]
    if source == "onnx":
        provenance["translation"] = _translation_check(model, Path(rest).expanduser(), kw, data, pre, f"{h}x{w}", log)
    ckpt = Checkpoint(config=cfg, preprocess=pre, classes=cls, weights={k: v.detach().clone()
                                                                        for k, v in model.state_dict().items()},
                      metrics={"imported": provenance}, state={"finished": True})
    output.mkdir(parents=True, exist_ok=True)
    if in_file:
        with atomic_path(output / kw["file"]) as tmp:
            tmp.write_bytes(Path(rest).expanduser().read_bytes())
    path = save_checkpoint(ckpt, output / CHECKPOINT_NAME)
    with atomic_path(output / "imported.txt") as tmp:
        tmp.write_text("".join(f"{k}: {v}\n" for k, v in provenance.items()))
    log(f"imported {spec} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, {n} classes, "
        f"{h}x{w} {resize}) -> {path}")
    return path


def _check_data_classes(data: str, size: str, n: int) -> None:
    """A labelled ``--data`` must have the model's classes (its masks are scored against the model's output)."""
    from edgeseg.data import open_split
    from edgeseg.core.errors import MissingSplit

    try:
        split = open_split(data, "test", size)
    except MissingSplit:  # check says so when it needs the split
        return
    if getattr(split, "labelled", True) and len(split.classes) != n:
        raise UsageError(f"--data '{data}' has {len(split.classes)} classes but the model outputs {n}; give the "
                         f"dataset the model was trained on, or folder:IMAGES (images without masks)")


def _onnx_size(path: Path, image_size: str | int | None) -> str | int | None:
    """The input size of an ONNX import: the file's static H and W (``--image-size`` must agree), or
    ``--image-size`` for a dynamic one. The input must be one NCHW image."""
    from edgeseg.models.from_onnx import input_shape

    if not path.is_file():
        raise UsageError(f"onnx:{path}: no such file")
    dims = input_shape(path)
    if len(dims) != 4 or (isinstance(dims[1], int) and dims[1] != 3):
        layout = " (channels last: export it NCHW, as PyTorch does)" if len(dims) == 4 and dims[3] == 3 else ""
        raise UsageError(f"onnx:{path}: the input is {list(dims)}{layout}; edgeseg imports models with an NCHW "
                         f"[N, 3, H, W] image input")
    fixed = tuple(d for d in dims[2:] if isinstance(d, int) and d > 0)
    if len(fixed) == 2:
        if image_size is not None and parse_image_size(image_size) != fixed:
            raise UsageError(f"--image-size {image_size} does not match the ONNX file's fixed input {fixed[0]}x{fixed[1]}; "
                             f"drop --image-size or export the file at that size")
        return f"{fixed[0]}x{fixed[1]}"
    return image_size


def _translation_check(model: torch.nn.Module, src: Path, kw: dict[str, Any], data: str, pre: Preprocess,
                       size: str, log: Callable[[str], None], images: int = 4) -> str:
    """onnx2torch's translation vs onnxruntime on the first test images of ``data`` (random inputs where it
    has none): the figures go into the provenance; a translation that changes masks is refused."""
    import numpy as np

    from edgeseg.data import open_split
    from edgeseg.models.imported import reference_imported

    try:
        split = open_split(data, "test", size)
        xs = [pre.image(split[i][0])[None] for i in range(min(images, len(split)))]
    except Exception:  # noqa: BLE001 - a dataset without a test split still imports: random inputs instead
        xs = []
    what = f"{len(xs)} test images of {data}"
    if not xs:
        rng = np.random.default_rng(0)
        xs = [rng.standard_normal((1, 3, pre.height, pre.width)).astype(np.float32) for _ in range(images)]
        what = f"{images} random inputs"
    ref = reference_imported(base=src.parent, **{**kw, "file": src.name})
    diff, agree, total = 0.0, 0, 0
    with torch.no_grad():
        for x in xs:
            a, b = model(torch.from_numpy(x)).numpy(), ref(torch.from_numpy(x)).numpy()
            diff = max(diff, float(np.abs(a - b).max()))
            agree += int((a.argmax(1) == b.argmax(1)).sum())
            total += a.shape[0] * a.shape[2] * a.shape[3]
    pct = 100.0 * agree / max(total, 1)
    from importlib.metadata import version

    figures = (f"onnx2torch {version('onnx2torch')} vs onnxruntime on {what}: "
               f"agreement {pct:.3f} %, max |Δlogit| {diff:.3g}")
    if pct < MIN_TRANSLATION_AGREEMENT:
        raise UsageError(f"onnx:{src}: the PyTorch translation does not compute what the file does ({figures}); "
                         f"edgeseg cannot export it faithfully")
    log(f"translation checked: {figures}")
    return figures


def check_data_spec(data: str) -> str:
    """The run's dataset spec must name a real format (it feeds int8 calibration and check)."""
    from edgeseg.data import DATASETS, parse_spec

    kind = parse_spec(data)[0]
    DATASETS.get(kind)
    return data

