"""TFLite model metadata: what an Android app (and MediaPipe Tasks) reads from a ``.tflite`` file.

Two entries go into the flatbuffer's ``metadata`` list:

* ``TFLITE_METADATA``: the published TFLite metadata schema (``metadata_schema.fbs``, file identifier
  ``M001``), built with MediaPipe's generated schema classes and its ``metadata_info`` writers: model
  name/version/author/licence, the image input (RGB, normalization mean/std in pixel units, value range), the
  segmentation output and a ``labels.txt`` associated file packed as a zip appended to the model, as the schema
  specifies. MediaPipe's ``ImageSegmenter`` and the TFLite Support library read it.
* ``edgeseg``: a small JSON document (input kind, normalization, classes and colours, output kind) so that
  edgeseg's own runner knows how to feed the model without the export record beside it.

Reproducible: the appended zip gets fixed timestamps (MediaPipe's populator stamps the current time), so the
same model and fields give the same bytes.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exporters.base import ExporterError

METADATA_NAME = "TFLITE_METADATA"
EDGESEG_NAME = "edgeseg"
LABELS_FILE = "labels.txt"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can record: fixed, so files hash the same every time


@dataclass(frozen=True)
class ModelInfo:
    """What the metadata says about a segmentation model.

    ``mean``/``std`` are in the units of the model's input tensor values: for a pixel-input model
    (normalization inside the graph) 0 and 1; for a normalized-input model the per-channel pixel mean and std
    (``mean * 255``), which the TFLite schema allows but MediaPipe Tasks does not (one value for all channels).
    """

    name: str
    labels: tuple[str, ...]
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    output: str = "logits"
    edgeseg: dict[str, Any] = field(default_factory=dict)


def _schemas():
    from exporters.native import without_tensorflow

    try:
        with without_tensorflow():  # mediapipe's metadata module probes for TensorFlow (exporters/native.py)
            from mediapipe.tasks.metadata import metadata_schema_py_generated as mfb
            from mediapipe.tasks.metadata import schema_py_generated as sfb
            from mediapipe.tasks.python.metadata.metadata_writers import metadata_info as mi
    except ImportError as e:
        raise ExporterError(f"writing TFLite metadata needs mediapipe ({e}); pip install 'edgeseg[tflite]'") from None
    return mfb, sfb, mi


def split_zip(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    """The flatbuffer part of a ``.tflite`` file and the associated files of its appended zip (if any)."""
    bio = io.BytesIO(data)
    if not zipfile.is_zipfile(bio):
        return data, {}
    with zipfile.ZipFile(bio) as zf:
        infos = zf.infolist()
        files = {i.filename: zf.read(i) for i in infos}
        start = min((i.header_offset for i in infos), default=len(data))
    return data[:start], files


def _model_with(sfb, model_buf: bytes, entries: dict[str, bytes]) -> bytes:
    """``model_buf`` with the named metadata buffers set (replaced in place when they already exist)."""
    model = sfb.ModelT.InitFromObj(sfb.Model.GetRootAsModel(model_buf, 0))
    model.metadata = model.metadata or []
    model.buffers = model.buffers or []
    for buf in model.buffers:  # external buffers (ai-edge-quantizer writes them) point past the flatbuffer, which
        if getattr(buf, "offset", 0) > 1 and getattr(buf, "size", 0) > 0:  # re-packing moves: take them inline
            buf.data = np.frombuffer(model_buf[buf.offset : buf.offset + buf.size], np.uint8)
            buf.offset, buf.size = 0, 0
    existing = {m.name.decode() if isinstance(m.name, bytes) else m.name: m for m in model.metadata}
    for name, payload in entries.items():
        buf = sfb.BufferT()
        buf.data = np.frombuffer(payload, np.uint8)
        if name in existing:
            model.buffers[existing[name].buffer] = buf
        else:
            model.buffers.append(buf)
            entry = sfb.MetadataT()
            entry.name = name
            entry.buffer = len(model.buffers) - 1
            model.metadata.append(entry)
    import flatbuffers

    b = flatbuffers.Builder(len(model_buf) + 4096)
    b.Finish(model.Pack(b), b"TFL3")
    return bytes(b.Output())


def populate(data: bytes, info: ModelInfo) -> bytes:
    """Return ``data`` (a .tflite file, with or without earlier metadata) carrying ``info``."""
    mfb, sfb, mi = _schemas()
    from mediapipe.tasks.metadata import image_segmenter_metadata_schema_py_generated as segfb

    flat, _ = split_zip(data)
    try:
        model = sfb.Model.GetRootAsModel(flat, 0)
        sub = model.Subgraphs(0)
        in_type = sub.Tensors(sub.Inputs(0)).Type()
        n_outputs = sub.OutputsLength()
    except Exception as e:  # noqa: BLE001 - a damaged flatbuffer raises anything from struct to IndexError
        raise ExporterError(f"not a TFLite model ({e.__class__.__name__}: {e})") from None
    if n_outputs != 1:
        raise ExporterError(f"edgeseg writes metadata for one-output segmentation models; this one has {n_outputs}")
    general = mi.GeneralMd(name=info.name, version=info.version or None, description=info.description or None,
                           author=info.author or None, licenses=info.license or None).create_metadata()
    image = mi.InputImageTensorMd(
        name="image", description="RGB image, values " + ("0-255" if info.std == (1.0,) else "normalized"),
        norm_mean=list(info.mean), norm_std=list(info.std), color_space_type=mfb.ColorSpaceType.RGB,
        tensor_type=in_type).create_metadata()
    if info.output == "argmax":
        labels = mi.AssociatedFileMd(LABELS_FILE, "Class names, one per line: line i names class value i.",
                                     mfb.AssociatedFileType.TENSOR_VALUE_LABELS)
        out = mi.TensorMd(name="class_map", description="Class index of each pixel [1, H, W].",
                          associated_files=[labels]).create_metadata()
    else:
        out = mi.SegmentationMaskMd(name="segmentation_masks",
                                    description="Per-class scores [1, H, W, classes]; the mask is their argmax.",
                                    label_files=[mi.LabelFileMd(LABELS_FILE)]).create_metadata()
    import flatbuffers

    subgraph = mfb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [out]
    general.subgraphMetadata = [subgraph]
    general.minParserVersion = "1.0.0"  # every field used so far is in the schema's first version
    if info.output == "logits":
        # MediaPipe's segmenter options: softmax over the scores, so its confidence masks are probabilities
        options = segfb.ImageSegmenterOptionsT()
        options.activation = segfb.Activation.SOFTMAX
        b = flatbuffers.Builder(0)
        b.Finish(options.Pack(b), b"V001")
        custom = mfb.CustomMetadataT()
        custom.name = "SEGMENTER_METADATA"
        custom.data = np.frombuffer(bytes(b.Output()), np.uint8)
        subgraph.customMetadata = [custom]
        general.minParserVersion = "1.5.0"  # CustomMetadata in SubGraphMetadata: schema 1.5.0

    b = flatbuffers.Builder(0)
    b.Finish(general.Pack(b), b"M001")
    edgeseg = json.dumps({**info.edgeseg, "output": info.output}, sort_keys=True).encode()
    flat = _model_with(sfb, flat, {METADATA_NAME: bytes(b.Output()), EDGESEG_NAME: edgeseg})
    bio = io.BytesIO()
    bio.write(flat)
    with zipfile.ZipFile(bio, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(LABELS_FILE, date_time=_ZIP_DATE), "\n".join(info.labels) + "\n")
    return bio.getvalue()


def _entries(flat: bytes) -> dict[str, bytes]:
    """Named metadata buffers of a model (read with LiteRT's generated model schema; no mediapipe needed)."""
    from ai_edge_litert import schema_py_generated as sfb

    model = sfb.Model.GetRootAsModel(flat, 0)
    out = {}
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        buf = model.Buffers(m.Buffer())
        out[m.Name().decode()] = buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
    return out


def edgeseg_info(data: bytes) -> dict[str, Any]:
    """The ``edgeseg`` metadata entry of a model ({} for models edgeseg did not make)."""
    flat, _ = split_zip(data)
    try:
        raw = _entries(flat).get(EDGESEG_NAME)
    except Exception:  # noqa: BLE001 - a foreign or damaged file: no edgeseg metadata; LiteRT reports damage
        return {}
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return {}


def read(data: bytes) -> dict[str, Any]:
    """The schema metadata as a plain dict (name, version, author, license, normalization, labels, ...)."""
    mfb, _, _ = _schemas()
    flat, files = split_zip(data)
    raw = _entries(flat).get(METADATA_NAME)
    if not raw:
        return {}
    md = mfb.ModelMetadataT.InitFromObj(mfb.ModelMetadata.GetRootAsModelMetadata(raw, 0))
    text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
    sub = md.subgraphMetadata[0]
    inp, out = sub.inputTensorMetadata[0], sub.outputTensorMetadata[0]
    norm = inp.processUnits[0].options if inp.processUnits else None
    return {
        "name": text(md.name), "version": text(md.version), "description": text(md.description),
        "author": text(md.author), "license": text(md.license), "min_parser_version": text(md.minParserVersion),
        "input": {"name": text(inp.name), "mean": [float(v) for v in norm.mean] if norm else None,
                  "std": [float(v) for v in norm.std] if norm else None,
                  "min": [float(v) for v in inp.stats.min] if inp.stats and inp.stats.min is not None else None,
                  "max": [float(v) for v in inp.stats.max] if inp.stats and inp.stats.max is not None else None},
        "output": {"name": text(out.name),
                   "files": [{"name": text(f.name), "type": int(f.type)} for f in out.associatedFiles or []]},
        "associated_files": {k: v.decode() for k, v in files.items()},
    }
