"""The README an app developer reads in a bundle: what the files are, and Kotlin and Swift code filled in with this
model's sizes, input encoding, output layout and class colours."""

from __future__ import annotations

from typing import Any


def _kotlin_input(plat: dict[str, Any], mean: list[float], std: list[float]) -> tuple[str, str]:
    """(bytes per channel, the statement that writes one pixel's r, g, b into ``input``)."""
    dtype, values = plat["input"]["dtype"], plat["input"]["values"]
    if values.startswith("RGB pixels"):
        if dtype == "uint8":
            return "1", "input.put(r.toByte()); input.put(g.toByte()); input.put(b.toByte())"
        return "4", "input.putFloat(r.toFloat()); input.putFloat(g.toFloat()); input.putFloat(b.toFloat())"
    norm = (f"val nr = (r / 255f - {mean[0]:.4f}f) / {std[0]:.4f}f; val ng = (g / 255f - {mean[1]:.4f}f) / "
            f"{std[1]:.4f}f; val nb = (b / 255f - {mean[2]:.4f}f) / {std[2]:.4f}f")
    if dtype == "int8":
        q = plat["input"]["quantization"]
        return "1", (f"{norm}\n            for (v in floatArrayOf(nr, ng, nb)) input.put((Math.round(v / {q['scale']}f) + "
                     f"{q['zero_point']}).coerceIn(-128, 127).toByte())")
    return "4", f"{norm}\n            input.putFloat(nr); input.putFloat(ng); input.putFloat(nb)"


def _kotlin_output(plat: dict[str, Any], n: int) -> str:
    out = plat["output"]
    if out["kind"] == "argmax":
        return ("val output = ByteBuffer.allocateDirect(W * H).order(ByteOrder.nativeOrder())\n"
                "    interpreter.run(input, output)\n"
                "    output.rewind()\n"
                "    val classes = IntArray(W * H) { output.get().toInt() and 0xFF }  // class index per pixel")
    size = "1" if out["dtype"] == "int8" else "4"
    read = "output.get().toFloat()" if out["dtype"] == "int8" else "output.getFloat()"
    note = "  // int8 scores: argmax needs no dequantization" if out["dtype"] == "int8" else ""
    return (f"val output = ByteBuffer.allocateDirect(W * H * NUM_CLASSES * {size}).order(ByteOrder.nativeOrder())\n"
            f"    interpreter.run(input, output)\n"
            f"    output.rewind()\n"
            f"    val classes = argmax(FloatArray(W * H * NUM_CLASSES) {{ {read} }}){note}")


# The pure logic of the app code: no Android type, so the tests compile and run it on the JVM (kotlinc) against
# edgeseg's Python (Preprocess.geometry, Preprocess.to_label, numpy's argmax). Geometry: half-up rounding and integer
# halves as Preprocess.geometry; nearest neighbour as PIL's resize (pixel centres, the source position accumulated
# in double precision, truncated), which Preprocess.to_label uses; the crop's seen region rounded half-to-even as
# Python's round().
def _kotlin_scaled(pick: str) -> str:
    """``scaledSize`` of letterbox (``minOf``: scale to fit, at most W x H) or crop (``maxOf``: scale to cover, at
    least W x H), as ``Preprocess.geometry``."""
    return f"""fun scaledSize(frameW: Int, frameH: Int): IntArray {{
    val s = {pick}(H.toDouble() / frameH, W.toDouble() / frameW)
    return intArrayOf({pick}(W, maxOf(1, Math.round(frameW * s).toInt())), {pick}(H, maxOf(1, Math.round(frameH * s).toInt())))
}}"""


_KOTLIN_SCALED = {
    "letterbox": _kotlin_scaled("minOf") + """

/** The frame's rectangle in the W x H input: left, top, right, bottom. */
fun place(frameW: Int, frameH: Int): IntArray {
    val (w, h) = scaledSize(frameW, frameH)
    val left = (W - w) / 2; val top = (H - h) / 2
    return intArrayOf(left, top, left + w, top + h)
}""",
    "stretch": """fun scaledSize(frameW: Int, frameH: Int): IntArray = intArrayOf(W, H)

/** The frame's rectangle in the W x H input: left, top, right, bottom (all of it). */
fun place(frameW: Int, frameH: Int): IntArray = intArrayOf(0, 0, W, H)""",
    "crop": _kotlin_scaled("maxOf") + """

/** The part of the frame the W x H input shows, in frame pixels: left, top, right, bottom. */
fun place(frameW: Int, frameH: Int): IntArray {
    val (w, h) = scaledSize(frameW, frameH)
    val left = (w - W) / 2; val top = (h - H) / 2
    val fx = frameW.toDouble() / w; val fy = frameH.toDouble() / h
    return intArrayOf(Math.rint(left * fx).toInt(), Math.rint(top * fy).toInt(),
                      Math.rint((left + W) * fx).toInt(), Math.rint((top + H) * fy).toInt())
}""",
}

_KOTLIN_TO_FRAME = {
    "crop": """/** The frame's class map (-1 where the model saw nothing: the cropped-off border), from the W x H one. */
fun toFrame(classes: IntArray, frameW: Int, frameH: Int): IntArray {
    val (l, t, r, b) = place(frameW, frameH)
    val xs = nearest(W, r - l); val ys = nearest(H, b - t)
    val out = IntArray(frameW * frameH) { -1 }
    for (y in t until b) for (x in l until r) out[y * frameW + x] = classes[ys[y - t] * W + xs[x - l]]
    return out
}""",
    "fit": """/** The frame's class map from the W x H one: the frame's rectangle of it, scaled back (nearest neighbour). */
fun toFrame(classes: IntArray, frameW: Int, frameH: Int): IntArray {
    val (l, t, r, b) = place(frameW, frameH)
    val xs = nearest(r - l, frameW); val ys = nearest(b - t, frameH)
    return IntArray(frameW * frameH) { classes[(t + ys[it / frameW]) * W + l + xs[it % frameW]] }
}""",
}


def kotlin_logic(m: dict[str, Any]) -> str:
    """The Kotlin of the bundle's README that needs no Android: the frame's geometry as in training, argmax over
    the output's class scores, the class map mapped back onto the frame. Uses the constants W, H, NUM_CLASSES."""
    resize = m["input"].get("resize", "stretch")
    resize = resize if resize in _KOTLIN_SCALED else "stretch"
    return f"""// ---- pure logic (no Android types; edgeseg runs it on the JVM against its Python) ----
/** The frame's size scaled as in training (`{resize}`): width, height. */
{_KOTLIN_SCALED[resize]}

/** For each of `dst` pixels, the source pixel of a nearest-neighbour resize from `src` (pixel centres). */
fun nearest(src: Int, dst: Int): IntArray {{
    val a = src.toDouble() / dst
    var v = a * 0.5
    return IntArray(dst) {{ val i = minOf(src - 1, v.toInt()); v += a; i }}
}}

/** The class of each pixel: argmax over its NUM_CLASSES scores (NHWC order; the first of equal scores). */
fun argmax(scores: FloatArray): IntArray = IntArray(scores.size / NUM_CLASSES) {{ p ->
    var best = 0
    for (c in 1 until NUM_CLASSES) if (scores[p * NUM_CLASSES + c] > scores[p * NUM_CLASSES + best]) best = c
    best
}}

{_KOTLIN_TO_FRAME["crop" if resize == "crop" else "fit"]}
// ---- end of pure logic ----"""


_KOTLIN_FIT = {
    "letterbox": """/** The frame as the model's W x H input: letterboxed as in training (scaled to fit, centred on black). */
fun fit(frame: Bitmap): Bitmap {
    val (w, h) = scaledSize(frame.width, frame.height)
    val (left, top) = place(frame.width, frame.height)
    val input = Bitmap.createBitmap(W, H, Bitmap.Config.ARGB_8888).apply { eraseColor(Color.BLACK) }
    Canvas(input).drawBitmap(Bitmap.createScaledBitmap(frame, w, h, true), left.toFloat(), top.toFloat(), null)
    return input
}""",
    "stretch": """/** The frame as the model's W x H input: stretched as in training (aspect ratio not kept). */
fun fit(frame: Bitmap): Bitmap = Bitmap.createScaledBitmap(frame, W, H, true)""",
    "crop": """/** The frame as the model's W x H input: scaled to cover as in training, its centre cut out. */
fun fit(frame: Bitmap): Bitmap {
    val (w, h) = scaledSize(frame.width, frame.height)
    return Bitmap.createBitmap(Bitmap.createScaledBitmap(frame, w, h, true), (w - W) / 2, (h - H) / 2, W, H)
}""",
}


def _kotlin(m: dict[str, Any]) -> str:
    plat = m["platforms"]["android"]
    h, w, n = m["input"]["height"], m["input"]["width"], len(m["classes"])
    colors = ", ".join(f"0xFF{c['color'][0]:02X}{c['color'][1]:02X}{c['color'][2]:02X}.toInt()" for c in m["classes"])
    nbytes, put = _kotlin_input(plat, m["input"]["normalization"]["mean"], m["input"]["normalization"]["std"])
    mediapipe = ""
    if plat["input"]["values"].startswith("RGB pixels") and plat["output"]["kind"] == "logits":
        mediapipe = """
With MediaPipe Tasks (`com.google.mediapipe:tasks-vision`), which reads the model's metadata (labels, input
encoding, softmax) itself — tested here with MediaPipe's Python ImageSegmenter, which runs the same C++ graph.
MediaPipe stretches whatever it is given to W x H; hand it the frame already fitted as in training (`fit` above:
exactly W x H, so its resize changes nothing) and map its mask back with `toFrame`. Measured on the quickstart
model (int8, 8 test frames): fitted first, MediaPipe's frame masks equal LiteRT's on square, 4:3 and 9:16 frames
(100 %); handed a 4:3 or 9:16 frame as it is, they agree with PyTorch on 98.5 % / 96.9 % of pixels instead of
99.8 % / 99.6 % (`python benchmarks/mediapipe_frames.py RUN`).

```kotlin
val segmenter = ImageSegmenter.createFromOptions(context,
    ImageSegmenter.ImageSegmenterOptions.builder()
        .setBaseOptions(BaseOptions.builder().setModelAssetPath("model.tflite").build())
        .setOutputCategoryMask(true).setOutputConfidenceMasks(false).build())
val result = segmenter.segment(BitmapImageBuilder(fit(bitmap)).build())  // the training geometry, W x H
val bytes = ByteBufferExtractor.extract(result.categoryMask().get())  // W x H bytes: the class index
val classes = IntArray(W * H) { bytes.get(it).toInt() and 0xFF }
val frameMask = colored(toFrame(classes, bitmap.width, bitmap.height), bitmap.width, bitmap.height)
```
"""
    fit = _KOTLIN_FIT.get(m["input"].get("resize"), _KOTLIN_FIT["stretch"])
    logic = kotlin_logic(m)
    return f"""```kotlin
// app/build.gradle.kts: implementation("com.google.ai.edge.litert:litert:1.4.0")
//                       androidResources {{ noCompress += "tflite" }}
// copy android/model.tflite to app/src/main/assets/
import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Color
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel
import org.tensorflow.lite.Interpreter

const val W = {w}
const val H = {h}
const val NUM_CLASSES = {n}
val COLORS = intArrayOf({colors})  // ARGB per class, from manifest.json

fun loadSegmenter(context: Context): Interpreter {{
    val fd = context.assets.openFd("model.tflite")
    val model = FileInputStream(fd.fileDescriptor).channel
        .map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
    return Interpreter(model, Interpreter.Options().setNumThreads(2))
}}

{logic}

{fit}

/** The class mask of [bitmap] (any size) as a bitmap of its size in the class colours. */
fun segment(interpreter: Interpreter, bitmap: Bitmap): Bitmap {{
    val scaled = fit(bitmap)
    val pixels = IntArray(W * H).also {{ scaled.getPixels(it, 0, W, 0, 0, W, H) }}
    val input = ByteBuffer.allocateDirect(W * H * 3 * {nbytes}).order(ByteOrder.nativeOrder())
    for (p in pixels) {{
        val r = (p shr 16) and 0xFF; val g = (p shr 8) and 0xFF; val b = p and 0xFF
            {put}
    }}
    {_kotlin_output(plat, n)}
    return colored(toFrame(classes, bitmap.width, bitmap.height), bitmap.width, bitmap.height)
}}

/** A class map as a bitmap in the class colours (transparent where there is no class). */
fun colored(classes: IntArray, w: Int, h: Int): Bitmap =
    Bitmap.createBitmap(IntArray(w * h) {{ if (classes[it] < 0) 0 else COLORS[classes[it]] }}, w, h, Bitmap.Config.ARGB_8888)
```
{mediapipe}"""


def _swift(m: dict[str, Any]) -> str:
    plat = m["platforms"]["ios"]
    cls = plat["file"].split("/")[-1].removesuffix(".mlpackage")
    h, w, n = m["input"]["height"], m["input"]["width"], len(m["classes"])
    colors = ", ".join(f"({c['color'][0]}, {c['color'][1]}, {c['color'][2]})" for c in m["classes"])
    image = plat["input"]["type"].startswith("image")
    argmax = plat["output"]["kind"] == "argmax"
    pick = ("let cls = Int(out[y * W + x].int32Value)" if argmax else
            "var cls = 0\n            var best = -Float.infinity\n"
            "            for c in 0..<NUM_CLASSES {\n"
            "                let s = out[(c * H + y) * W + x].floatValue\n"
            "                if s > best { best = s; cls = c }\n"
            "            }")
    option = {"letterbox": ".scaleFit  // letterbox as in training: scale to fit, keep the aspect ratio, centre",
              "crop": ".centerCrop  // as in training: scale to cover, keep the aspect ratio, cut out the centre"}.get(
        m["input"].get("resize"), ".scaleFill  // resize to W x H, aspect ratio not kept (as in training)")
    feed = (f"""    let request = VNCoreMLRequest(model: try VNCoreMLModel(for: model.model))
    request.imageCropAndScaleOption = {option}
    try VNImageRequestHandler(cgImage: image).perform([request])
    guard let obs = request.results?.first as? VNCoreMLFeatureValueObservation,
          let out = obs.featureValue.multiArrayValue else {{ return nil }}"""
            if image else
            f"""    // multiarray input: fill a [1, 3, {h}, {w}] Float32 MLMultiArray with (pixel / 255 - mean) / std
    let input = try MLMultiArray(shape: [1, 3, {h}, {w}], dataType: .float32)
    // ... write the normalized RGB values of the resized image into `input` (channel-major) ...
    let out = try model.prediction(image: input).{plat['output']['name']}""")
    return f"""```swift
// Drag ios/{cls}.mlpackage into Xcode: it generates the class `{cls}`.
import CoreML
import Vision

let W = {w}, H = {h}, NUM_CLASSES = {n}
let COLORS: [(UInt8, UInt8, UInt8)] = [{colors}]  // RGB per class, from manifest.json

/// The class mask of `image` as RGBA bytes (W x H) in the class colours.
func segment(_ image: CGImage) throws -> [UInt8]? {{
    let config = MLModelConfiguration()
    config.computeUnits = .all
    let model = try {cls}(configuration: config)
{feed}
    var rgba = [UInt8](repeating: 255, count: W * H * 4)
    for y in 0..<H {{
        for x in 0..<W {{
            {pick}
            let (r, g, b) = COLORS[cls]
            let i = (y * W + x) * 4
            rgba[i] = r; rgba[i + 1] = g; rgba[i + 2] = b
        }}
    }}
    return rgba
}}
```
"""


def _executorch(m: dict[str, Any]) -> list[str]:
    """The ExecuTorch section: the .pte through ExecuTorch's Module API in Kotlin (Android) and Swift (iOS), fed
    the model's NCHW normalized floats, the class of each pixel read from its NCHW output."""
    from exporters.executorch import fallback_text

    e = m["executorch"]
    h, w, n = m["input"]["height"], m["input"]["width"], len(m["classes"])
    mean, std = m["input"]["normalization"]["mean"], m["input"]["normalization"]["std"]
    argmax = e["output"]["kind"] == "argmax"
    d = e["delegation"]
    fallback = fallback_text(d)
    kt_pick = ("val classes = out.dataAsIntArray  // class index per pixel" if argmax else
               """val scores = out.dataAsFloatArray  // NCHW: class c of pixel p at c * W * H + p
    val classes = IntArray(W * H) { p ->
        var best = 0
        for (c in 1 until NUM_CLASSES) if (scores[c * W * H + p] > scores[best * W * H + p]) best = c
        best
    }""")
    helpers = ("the Android section's `fit`, `toFrame` and `colored`" if "android" in m["platforms"] else
               "`fit`, `toFrame` and `colored` as in the Android section of a bundle with a TFLite file")
    sw_type, sw_pick = ("Int32", "let cls = Int(out[y * W + x])") if argmax else (
        "Float", "var cls = 0\n            for c in 1..<NUM_CLASSES where out[(c * H + y) * W + x] > "
                 "out[(cls * H + y) * W + x] { cls = c }")
    kotlin = f"""```kotlin
// app/build.gradle.kts: implementation("org.pytorch:executorch-android:1.0.0")
// copy {e['file']} out of the APK's assets to a file: Module.load takes a path
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

const val W = {w}
const val H = {h}
const val NUM_CLASSES = {n}
val MEAN = floatArrayOf({", ".join(f"{v:.4f}f" for v in mean)})
val STD = floatArrayOf({", ".join(f"{v:.4f}f" for v in std)})

/** The class mask of [bitmap] (any size) in the class colours; uses {helpers}. */
fun segment(module: Module, bitmap: Bitmap): Bitmap {{
    val pixels = IntArray(W * H).also {{ fit(bitmap).getPixels(it, 0, W, 0, 0, W, H) }}
    val chw = FloatArray(3 * W * H)  // NCHW, normalized as in training
    for ((p, v) in pixels.withIndex()) {{
        val rgb = intArrayOf((v shr 16) and 0xFF, (v shr 8) and 0xFF, v and 0xFF)
        for (c in 0 until 3) chw[c * W * H + p] = (rgb[c] / 255f - MEAN[c]) / STD[c]
    }}
    val input = Tensor.fromBlob(chw, longArrayOf(1, 3, H.toLong(), W.toLong()))
    val out = module.forward(EValue.from(input))[0].toTensor()
    {kt_pick}
    return colored(toFrame(classes, bitmap.width, bitmap.height), bitmap.width, bitmap.height)
}}
// val module = Module.load(File(context.filesDir, "model.pte").path)
```"""
    swift = f"""```swift
// Swift Package Manager: https://github.com/pytorch/executorch, branch swiftpm-1.0.0, products executorch,
// backend_xnnpack, kernels_optimized (other linker flags: -all_load)
import ExecuTorch

let W = {w}, H = {h}, NUM_CLASSES = {n}
let MEAN: [Float] = [{", ".join(f"{v:.4f}" for v in mean)}], STD: [Float] = [{", ".join(f"{v:.4f}" for v in std)}]

/// The class of each pixel of `rgb` (W x H x 3 bytes, the frame fitted to W x H as in training).
func classes(_ module: Module, _ rgb: [UInt8]) throws -> [Int] {{
    var chw = [Float](repeating: 0, count: 3 * W * H)  // NCHW, normalized as in training
    for p in 0..<(W * H) {{
        for c in 0..<3 {{ chw[c * W * H + p] = (Float(rgb[p * 3 + c]) / 255 - MEAN[c]) / STD[c] }}
    }}
    let input = Tensor<Float>(chw, shape: [1, 3, H, W])
    guard let output: Tensor<{sw_type}> = try module.forward(input).first?.tensor() else {{ return [] }}
    let out = output.scalars()
    var mask = [Int](repeating: 0, count: W * H)
    for y in 0..<H {{
        for x in 0..<W {{
            {sw_pick}
            mask[y * W + x] = cls
        }}
    }}
    return mask
}}
// let module = Module(filePath: Bundle.main.path(forResource: "model", ofType: "pte")!)
```"""
    return [f"## ExecuTorch (`{e['file']}`, Android and iOS)", "", f"{_evidence(e)}.", "",
            f"One file for both platforms: ExecuTorch's runtime with the XNNPACK delegate (CPU). Delegation: "
            f"{d['partitions']} XNNPACK partition(s), {d['delegated_ops']} ops in XNNPACK, {d['fallback_ops']} on "
            f"ExecuTorch's portable kernels ({fallback}). Input `{e['input']['shape']}` {e['input']['dtype']} NCHW, "
            f"{e['input']['values']}; output `{e['output']['shape']}` {e['output']['dtype']} "
            + ("class index per pixel." if argmax else "class scores per pixel (NCHW); the mask is their argmax.")
            + " The figures above come from ExecuTorch's own runtime running this very file; the Kotlin and Swift "
              "below are not compiled by edgeseg's tests.",
            "", kotlin, "", swift, ""]


def _evidence(plat: dict[str, Any]) -> str:
    p = plat["parity"]
    if p.get("status") != "passed":
        parity = f"parity {p.get('status')}"
    else:
        parity = (f"{p['pixel_agreement']:.3f} % pixel agreement, mask mIoU {p['mask_miou']:.4f} vs PyTorch on "
                  f"{p['images']} test images ({p['runtime']})")
        w = p.get("worst_class")
        if w:
            parity += (f"; worst class against the test labels: {w['name']}, IoU {w['reference_iou']:.4f} -> "
                       f"{w['exported_iou']:.4f} ({w['change'] * 100:+.2f} points)")
    return evidence_line(plat, parity)


def evidence_line(plat: dict[str, Any], parity: str, unmeasured: str = "") -> str:
    """'size, precision; <parity>; latency' for a platform of the manifest (semantic and instance bundles)."""
    lat = plat.get("latency")
    speed = (f"{lat['median_ms']:.2f} ms median ({lat['runtime']})" if lat else
             f"latency not measured (run `edgeseg report` before bundling{unmeasured})")
    return f"{plat['size_bytes'] / 1e6:.2f} MB, {plat['precision']}; {parity}; {speed}"


def render_readme(m: dict[str, Any]) -> str:
    h, w = m["input"]["height"], m["input"]["width"]
    norm = m["input"]["normalization"]
    lines = [f"# {m['model']['name']} {m['model']['version']}", "",
             f"{m['model']['description']}. Made by edgeseg; `manifest.json` (schema `{m['schema']}`) describes every "
             f"file with its sha256 — check them with `edgeseg bundle --verify <this folder>`.", "",
             "| class | index | colour |", "|---|---:|---|"]
    lines += [f"| {c['name']} | {c['index']} | rgb({', '.join(map(str, c['color']))}) |" for c in m["classes"]]
    rule = m["input"].get("resize_rule") or "resized to height x width (bilinear, aspect ratio not kept)"
    lines += ["", f"Input: an RGB image of {w}x{h} (width x height). A camera frame of another size is fitted as in "
              f"training (`{m['input'].get('resize', 'stretch')}`): {rule}. The model was trained "
              f"on `(pixel / 255 - mean) / std` with mean {norm['mean']} and std {norm['std']}.", ""]
    if "android" in m["platforms"]:
        a = m["platforms"]["android"]
        q = a["input"].get("quantization")
        lines += ["## Android (`android/model.tflite`)", "",
                  f"{_evidence(a)}.", "",
                  f"Input `{a['input']['shape']}` {a['input']['dtype']} NHWC, {a['input']['values']}"
                  + (f" (quantization scale {q['scale']}, zero point {q['zero_point']})" if q else "")
                  + f"; output `{a['output']['shape']}` {a['output']['dtype']} "
                  + ("class index per pixel." if a["output"]["kind"] == "argmax" else
                     "class scores per pixel; the mask is their argmax."), "",
                  "The file carries TFLite metadata (name, version, normalization, `labels.txt`).", "",
                  _kotlin(m)]
    if "ios" in m["platforms"]:
        i = m["platforms"]["ios"]
        lines += [f"## iOS (`{i['file']}`)", "", f"{_evidence(i)}.", "",
                  f"Minimum {i.get('deployment_target') or 'iOS16'}. Input `{i['input']['name']}`: "
                  f"{i['input']['type']}; output `{i['output']['name']}` `{i['output']['shape']}` "
                  f"{i['output']['dtype']} " + ("class index per pixel." if i["output"]["kind"] == "argmax"
                                                else "class scores per pixel; the mask is their argmax."),
                  "Class names and colours are also in the package's metadata (`classes`, `colors`).", "",
                  _swift(m)]
    if "executorch" in m:
        lines += _executorch(m)
    lines += ["The snippets are written for this model's tensors; they are not compiled by edgeseg's tests "
              "(no Android or Xcode toolchain there). What is tested: LiteRT runs `android/model.tflite`, "
              "MediaPipe's ImageSegmenter reads its metadata, and every file matches `manifest.json`.", ""]
    return "\n".join(lines)
