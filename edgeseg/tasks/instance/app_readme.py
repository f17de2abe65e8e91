"""The README of a Mask R-CNN bundle: the output tensors and Kotlin/Swift code that decodes them — letterbox, run,
keep the detections the check kept, paste each M x M mask into the input as ``edgeseg check`` does
(:func:`edgeseg.tasks.instance.static_graph.paste_mask_app` is the same algorithm in Python, tested against
torchvision's), and map boxes and masks back onto the frame."""

from __future__ import annotations

from typing import Any

from edgeseg.tasks.semantic.app_readme import evidence_line


def _constants(m: dict[str, Any]) -> dict[str, Any]:
    p = m["postprocess"]
    return {"S": m["input"]["height"], "D": p["detections"], "M": p["mask_size"], "T": p["score_threshold"]}


def _kotlin(m: dict[str, Any]) -> str:
    c = _constants(m)
    a = m["platforms"]["android"]
    key = {t["name"]: t["key"] for t in a["output"]["tensors"]}
    names = ", ".join(f'"{x["name"]}"' for x in m["classes"])
    return f"""```kotlin
// app/build.gradle.kts: implementation("com.google.ai.edge.litert:litert:1.4.0")
//                       androidResources {{ noCompress += "tflite" }}
// copy android/model.tflite to app/src/main/assets/
import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.RectF
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel
import org.tensorflow.lite.Interpreter

const val S = {c['S']}                      // input: S x S RGB
const val D = {c['D']}                      // detection rows; the first num_detections are valid, by score
const val M = {c['M']}                      // mask grid per detection
const val SCORE_THRESHOLD = {c['T']}f       // the score threshold edgeseg check used
val CLASS_NAMES = arrayOf({names})  // labels.txt; 0 = background

/** One instance in frame pixels: [mask] is frameWidth * frameHeight, row-major, true inside the instance. */
class Instance(val classIndex: Int, val label: String, val score: Float, val box: RectF, val mask: BooleanArray)

fun loadDetector(context: Context): Interpreter {{
    val fd = context.assets.openFd("model.tflite")
    val model = FileInputStream(fd.fileDescriptor).channel
        .map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
    return Interpreter(model, Interpreter.Options().setNumThreads(2))
}}

/** Letterbox as in training: longer side scaled to S (half-to-even rounding), frame at the top-left, black
 *  elsewhere. Returns the input and s, input pixels per frame pixel. */
fun letterbox(frame: Bitmap): Pair<Bitmap, Double> {{
    val s = S.toDouble() / maxOf(frame.width, frame.height)
    val w = maxOf(1, Math.rint(frame.width * s).toInt()); val h = maxOf(1, Math.rint(frame.height * s).toInt())
    val input = Bitmap.createBitmap(S, S, Bitmap.Config.ARGB_8888).apply {{ eraseColor(Color.BLACK) }}
    Canvas(input).drawBitmap(Bitmap.createScaledBitmap(frame, w, h, true), 0f, 0f, null)
    return input to s
}}

/** One detection's M x M mask probabilities pasted into the S x S input, exactly as edgeseg check does
 *  (torchvision's paste_masks_in_image, padding 1). */
fun paste(mask: Array<FloatArray>, box: FloatArray): FloatArray {{
    val p = M + 2  // the mask with a zero border of 1
    fun padded(y: Int, x: Int) = if (y in 1..M && x in 1..M) mask[y - 1][x - 1] else 0f
    val scale = p.toFloat() / M
    val wHalf = (box[2] - box[0]) * 0.5f * scale; val hHalf = (box[3] - box[1]) * 0.5f * scale
    val xc = (box[2] + box[0]) * 0.5f; val yc = (box[3] + box[1]) * 0.5f
    // toInt() truncates toward zero, like torch's cast to int64
    val x0 = (xc - wHalf).toInt(); val x1 = (xc + wHalf).toInt()
    val y0 = (yc - hHalf).toInt(); val y1 = (yc + hHalf).toInt()
    val w = maxOf(x1 - x0 + 1, 1); val h = maxOf(y1 - y0 + 1, 1)
    val sw = p.toFloat() / w; val sh = p.toFloat() / h
    val out = FloatArray(S * S)
    for (y in maxOf(y0, 0) until minOf(y1 + 1, S)) {{
        // bilinear with half-pixel centres, source clamped at 0 (F.interpolate, align_corners=False)
        val sy = maxOf(sh * (y - y0 + 0.5f) - 0.5f, 0f)
        val iy = sy.toInt(); val iy1 = minOf(iy + 1, p - 1); val ly = sy - iy
        for (x in maxOf(x0, 0) until minOf(x1 + 1, S)) {{
            val sx = maxOf(sw * (x - x0 + 0.5f) - 0.5f, 0f)
            val ix = sx.toInt(); val ix1 = minOf(ix + 1, p - 1); val lx = sx - ix
            val top = (1 - lx) * padded(iy, ix) + lx * padded(iy, ix1)
            val bottom = (1 - lx) * padded(iy1, ix) + lx * padded(iy1, ix1)
            out[y * S + x] = (1 - ly) * top + ly * bottom
        }}
    }}
    return out
}}

fun detect(interpreter: Interpreter, frame: Bitmap): List<Instance> {{
    val (input, s) = letterbox(frame)
    val pixels = IntArray(S * S).also {{ input.getPixels(it, 0, S, 0, 0, S, S) }}
    val x = ByteBuffer.allocateDirect(4 * 3 * S * S).order(ByteOrder.nativeOrder())
    for (c in 0 until 3) for (p in pixels) x.putFloat(((p shr (16 - 8 * c)) and 0xFF) / 255f)  // NCHW: R, G, B planes
    x.rewind()
    val boxes = Array(1) {{ Array(D) {{ FloatArray(4) }} }}
    val scores = Array(1) {{ FloatArray(D) }}
    val classes = Array(1) {{ FloatArray(D) }}
    val num = FloatArray(1)
    val masks = Array(1) {{ Array(D) {{ Array(M) {{ FloatArray(M) }} }} }}
    interpreter.runSignature(mapOf("{a['input']['key']}" to x), mapOf(
        "{key['boxes']}" to boxes, "{key['scores']}" to scores, "{key['classes']}" to classes,
        "{key['num_detections']}" to num, "{key['masks']}" to masks))
    val fw = frame.width; val fh = frame.height
    return (0 until Math.round(num[0])).filter {{ scores[0][it] >= SCORE_THRESHOLD }}.map {{ i ->
        val b = boxes[0][i]
        val probs = paste(masks[0][i], b)
        val mask = BooleanArray(fw * fh) {{ j ->  // nearest input pixel of each frame pixel
            probs[minOf(S - 1, ((j / fw) * s).toInt()) * S + minOf(S - 1, ((j % fw) * s).toInt())] >= 0.5f
        }}
        val k = Math.round(classes[0][i])
        Instance(k, CLASS_NAMES[k], scores[0][i],
                 RectF((b[0] / s).toFloat(), (b[1] / s).toFloat(), (b[2] / s).toFloat(), (b[3] / s).toFloat()), mask)
    }}
}}
```
"""


def _swift(m: dict[str, Any]) -> str:
    c = _constants(m)
    i = m["platforms"]["ios"]
    cls = i["file"].split("/")[-1].removesuffix(".mlpackage")
    names = ", ".join(f'"{x["name"]}"' for x in m["classes"])
    return f"""```swift
// Drag ios/{cls}.mlpackage into Xcode: it generates the class `{cls}`.
import CoreGraphics
import CoreML
import CoreVideo

let S = {c['S']}, D = {c['D']}, M = {c['M']}
let SCORE_THRESHOLD: Float = {c['T']}  // the score threshold edgeseg check used
let CLASS_NAMES = [{names}]  // labels.txt; 0 = background

/// One instance in frame pixels: `mask` is width * height, row-major, true inside the instance.
struct Instance {{ let classIndex: Int; let label: String; let score: Float; let box: CGRect; let mask: [Bool] }}

/// Letterbox as in training: longer side scaled to S (half-to-even rounding), frame at the top-left, black
/// elsewhere. Returns the input and s, input pixels per frame pixel.
func letterbox(_ frame: CGImage) -> (CVPixelBuffer, Double)? {{
    let s = Double(S) / Double(max(frame.width, frame.height))
    let w = max(1, Int((Double(frame.width) * s).rounded(.toNearestOrEven)))
    let h = max(1, Int((Double(frame.height) * s).rounded(.toNearestOrEven)))
    var out: CVPixelBuffer?
    guard CVPixelBufferCreate(nil, S, S, kCVPixelFormatType_32BGRA, nil, &out) == kCVReturnSuccess,
          let buffer = out else {{ return nil }}
    CVPixelBufferLockBaseAddress(buffer, [])
    defer {{ CVPixelBufferUnlockBaseAddress(buffer, []) }}
    guard let ctx = CGContext(data: CVPixelBufferGetBaseAddress(buffer), width: S, height: S, bitsPerComponent: 8,
                              bytesPerRow: CVPixelBufferGetBytesPerRow(buffer),
                              space: CGColorSpaceCreateDeviceRGB(),
                              bitmapInfo: CGImageAlphaInfo.premultipliedFirst.rawValue
                                  | CGBitmapInfo.byteOrder32Little.rawValue) else {{ return nil }}
    ctx.setFillColor(CGColor(red: 0, green: 0, blue: 0, alpha: 1))
    ctx.fill(CGRect(x: 0, y: 0, width: S, height: S))
    ctx.draw(frame, in: CGRect(x: 0, y: S - h, width: w, height: h))  // origin bottom-left: this is the top-left
    return (buffer, s)
}}

/// One detection's M x M mask probabilities pasted into the S x S input, exactly as edgeseg check does
/// (torchvision's paste_masks_in_image, padding 1).
func paste(_ masks: MLShapedArray<Float>, _ i: Int, _ box: [Float]) -> [Float] {{
    let p = M + 2  // the mask with a zero border of 1
    func padded(_ y: Int, _ x: Int) -> Float {{
        (1...M).contains(y) && (1...M).contains(x) ? masks[scalarAt: [0, i, y - 1, x - 1]] : 0
    }}
    let scale = Float(p) / Float(M)
    let wHalf = (box[2] - box[0]) * 0.5 * scale, hHalf = (box[3] - box[1]) * 0.5 * scale
    let xc = (box[2] + box[0]) * 0.5, yc = (box[3] + box[1]) * 0.5
    // Int(_:) truncates toward zero, like torch's cast to int64
    let x0 = Int(xc - wHalf), x1 = Int(xc + wHalf), y0 = Int(yc - hHalf), y1 = Int(yc + hHalf)
    let w = max(x1 - x0 + 1, 1), h = max(y1 - y0 + 1, 1)
    let sw = Float(p) / Float(w), sh = Float(p) / Float(h)
    var out = [Float](repeating: 0, count: S * S)
    guard max(y0, 0) < min(y1 + 1, S), max(x0, 0) < min(x1 + 1, S) else {{ return out }}
    for y in max(y0, 0)..<min(y1 + 1, S) {{
        // bilinear with half-pixel centres, source clamped at 0 (F.interpolate, align_corners=False)
        let sy = max(sh * (Float(y - y0) + 0.5) - 0.5, 0)
        let iy = Int(sy), iy1 = min(Int(sy) + 1, p - 1), ly = sy - Float(Int(sy))
        for x in max(x0, 0)..<min(x1 + 1, S) {{
            let sx = max(sw * (Float(x - x0) + 0.5) - 0.5, 0)
            let ix = Int(sx), ix1 = min(Int(sx) + 1, p - 1), lx = sx - Float(Int(sx))
            let top = (1 - lx) * padded(iy, ix) + lx * padded(iy, ix1)
            let bottom = (1 - lx) * padded(iy1, ix) + lx * padded(iy1, ix1)
            out[y * S + x] = (1 - ly) * top + ly * bottom
        }}
    }}
    return out
}}

func detect(_ frame: CGImage) throws -> [Instance] {{
    let config = MLModelConfiguration()
    config.computeUnits = .all
    let model = try {cls}(configuration: config)
    guard let (input, s) = letterbox(frame) else {{ return [] }}
    let out = try model.model.prediction(from: try MLDictionaryFeatureProvider(
        dictionary: ["{i['input']['name']}": MLFeatureValue(pixelBuffer: input)]))
    func array(_ name: String) -> MLShapedArray<Float> {{
        MLShapedArray<Float>(converting: out.featureValue(for: name)!.multiArrayValue!)
    }}
    let boxes = array("boxes"), scores = array("scores"), classes = array("classes")
    let masks = array("masks"), num = Int(array("num_detections")[scalarAt: [0]].rounded())
    let fw = frame.width, fh = frame.height
    var found: [Instance] = []
    for i in 0..<num where scores[scalarAt: [0, i]] >= SCORE_THRESHOLD {{
        let b = (0..<4).map {{ boxes[scalarAt: [0, i, $0]] }}
        let probs = paste(masks, i, b)
        var mask = [Bool](repeating: false, count: fw * fh)
        for y in 0..<fh {{  // nearest input pixel of each frame pixel
            for x in 0..<fw {{
                mask[y * fw + x] = probs[min(S - 1, Int(Double(y) * s)) * S + min(S - 1, Int(Double(x) * s))] >= 0.5
            }}
        }}
        let k = Int(classes[scalarAt: [0, i]].rounded())
        found.append(Instance(classIndex: k, label: CLASS_NAMES[k], score: scores[scalarAt: [0, i]],
                              box: CGRect(x: Double(b[0]) / s, y: Double(b[1]) / s,
                                          width: Double(b[2] - b[0]) / s, height: Double(b[3] - b[1]) / s),
                              mask: mask))
    }}
    return found
}}
```
"""


def _evidence(plat: dict[str, Any]) -> str:
    p = plat["parity"]
    if p.get("status") != "passed":
        parity = f"instance parity {p.get('status')}"
    else:
        parity = (f"{p['matched']} of {p['reference_detections']} reference detections matched ({p['missed']} "
                  f"missed, {p['extra']} extra), matched mask IoU {p['mask_iou_mean']:.4f}, box IoU min "
                  f"{p['box_iou_min']:.4f} on {p['images']} test images ({p['runtime']})")
    return evidence_line(plat, parity, "; Core ML is not timed off macOS")


def _tensors(plat: dict[str, Any]) -> list[str]:
    rows = ["| output | key | shape | dtype | meaning |", "|---|---|---|---|---|"]
    rows += [f"| {t['name']} | `{t['key']}` | {t['shape']} | {t['dtype']} | {t['meaning']} |"
             for t in plat["output"]["tensors"]]
    return rows


def render_instance_readme(m: dict[str, Any]) -> str:
    c = _constants(m)
    p = m["postprocess"]
    lines = [f"# {m['model']['name']} {m['model']['version']}", "",
             f"{m['model']['description']}. Made by edgeseg; `manifest.json` (schema `{m['schema']}`, task "
             f"`instance`) describes every file with its sha256 — check them with `edgeseg bundle --verify <this "
             f"folder>`.", "",
             "| class | index | colour |", "|---|---:|---|"]
    lines += [f"| {k['name']} | {k['index']} | rgb({', '.join(map(str, k['color']))}) |" for k in m["classes"]]
    lines += ["", f"Input: an RGB image of {c['S']}x{c['S']}. A camera frame is letterboxed as in training: "
              f"{m['input']['resize_rule']}. Pixels go in as they are (the model scales and normalizes).", "",
              f"Output: at most {c['D']} detections sorted by score; the first `num_detections` rows are valid. "
              f"The check (and the code below) keeps those scoring >= {c['T']}. Each has a {c['M']}x{c['M']} "
              f"grid of mask probabilities over its box, pasted into the input as the check does — {p['paste']} — "
              f"and thresholded at >= {p['mask_threshold']}.", ""]
    if "android" in m["platforms"]:
        a = m["platforms"]["android"]
        lines += ["## Android (`android/model.tflite`)", "", f"{_evidence(a)}.", "",
                  f"Input `{a['input']['key']}` {a['input']['shape']} {a['input']['dtype']} NCHW, "
                  f"{a['input']['values']}. Outputs (signature keys):", "", *_tensors(a), "", _kotlin(m)]
    if "ios" in m["platforms"]:
        i = m["platforms"]["ios"]
        lines += [f"## iOS (`{i['file']}`)", "", f"{_evidence(i)}.", "",
                  f"Minimum {i.get('deployment_target') or 'iOS16'}. Input `{i['input']['name']}`: "
                  f"{i['input']['type']}. Outputs:", "", *_tensors(i), "",
                  "Class names and colours are also in the package's metadata (`classes`, `colors`).", "", _swift(m)]
    lines += ["The snippets are written for this model's tensors; they are not compiled by edgeseg's tests (no "
              "Android or Xcode toolchain there). What is tested: LiteRT runs `android/model.tflite` with instance "
              "parity, the paste above written step by step in Python (`paste_mask_app`) equals torchvision's on "
              "random boxes, and every file matches `manifest.json`.", ""]
    return "\n".join(lines)
