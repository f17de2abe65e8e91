"""The pure logic of the bundle's Kotlin (the frame's geometry as in training, argmax over the output's scores, the
class map mapped back onto the frame), compiled with kotlinc and run on the JVM against edgeseg's Python: the
app computes the masks `check` proved, pixel for pixel."""

import os
import shutil
import subprocess

import numpy as np
import pytest

from edgeseg.data.transforms import IGNORE_INDEX, Preprocess
from edgeseg.tasks.semantic.app_readme import kotlin_logic

pytestmark = pytest.mark.slow

W, H, C = 24, 16, 4  # a non-square model input
FRAMES = [(96, 128), (128, 72), (37, 91), (200, 150), (16, 24), (33, 250), (5, 3)]  # (height, width)

HARNESS = """
fun main(args: Array<String>) {
    val n = readLine()!!.trim().toInt()
    repeat(n) {
        val (fw, fh) = readLine()!!.trim().split(" ").map { it.toInt() }
        val scores = readLine()!!.trim().split(" ").map { it.toFloat() }.toFloatArray()
        println(place(fw, fh).joinToString(" "))
        println(toFrame(argmax(scores), fw, fh).joinToString(" "))
    }
}
"""


def _kotlinc() -> str:
    """kotlinc (Debian's kotlin 1.3 and a JDK); installed with apt-get when missing and running as root."""
    found = shutil.which("kotlinc")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        wait = ["-o", "DPkg::Lock::Timeout=300"]  # another apt run (the arm64 provisioning) holds the lock
        cmd = ["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends", "kotlin"]
        if subprocess.run(cmd, capture_output=True, env=env).returncode != 0:
            subprocess.run(["apt-get", *wait, "update", "-q"], capture_output=True, env=env)
            subprocess.run(cmd, capture_output=True, env=env)
        found = shutil.which("kotlinc")
    if found is None:
        pytest.fail("kotlinc is missing: apt-get install kotlin (Debian's kotlin 1.3 with a JDK) runs this test")
    return found


def _expected_place(pre: Preprocess, fh: int, fw: int) -> list[int]:
    g = pre.geometry(fh, fw)
    if pre.resize != "crop":
        return [g.left, g.top, g.left + g.scaled_w, g.top + g.scaled_h]
    sy, sx = fh / g.scaled_h, fw / g.scaled_w  # as Preprocess.to_label maps the seen window back
    return [round(-g.left * sx), round(-g.top * sy), round((-g.left + W) * sx), round((-g.top + H) * sy)]


RESIZES = ("letterbox", "crop", "stretch")


@pytest.fixture(scope="module")
def jar(tmp_path_factory):
    """The bundle's Kotlin for each resize mode, each file in a package of its own (``package crop`` ...: the
    README's code unchanged below that line), compiled by one kotlinc call instead of three (each call starts a JVM and
    the compiler; one suite run measured 18, 20 and 4 s for the three tests that each compiled, 3.5 s for the one
    call alone)."""
    kotlinc = _kotlinc()
    work = tmp_path_factory.mktemp("kotlin")
    sources = []
    for resize in RESIZES:
        src = work / f"{resize}.kt"
        src.write_text(f"package {resize}\n\nconst val W = {W}\nconst val H = {H}\nconst val NUM_CLASSES = {C}\n\n"
                       + kotlin_logic({"input": {"resize": resize}}) + "\n" + HARNESS)
        sources.append(str(src))
    out = work / "logic.jar"
    res = subprocess.run([kotlinc, *sources, "-include-runtime", "-d", str(out)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


@pytest.mark.parametrize("resize", RESIZES)
def test_the_bundles_kotlin_maps_masks_as_edgeseg_does(resize, jar):
    rng = np.random.default_rng(0)
    pre = Preprocess(H, W, resize=resize)
    cases, lines = [], [str(len(FRAMES))]
    for fh, fw in FRAMES:
        scores = rng.integers(-3, 4, (H, W, C)).astype(np.float32)  # small integers: ties, first index wins
        scores[0, 0] = 1.0  # every class tied at the first pixel
        cases.append(scores)
        lines += [f"{fw} {fh}", " ".join(f"{v:g}" for v in scores.ravel())]
    main_class = f"{resize}.{resize.capitalize()}Kt"  # the file's top-level main()
    out = subprocess.run(["java", "-cp", str(jar), main_class], input="\n".join(lines) + "\n", capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = out.stdout.split("\n")
    for k, ((fh, fw), scores) in enumerate(zip(FRAMES, cases)):
        place = [int(v) for v in got[2 * k].split()]
        frame = np.array([int(v) for v in got[2 * k + 1].split()]).reshape(fh, fw)
        assert place == _expected_place(pre, fh, fw), (resize, fh, fw)
        want = pre.to_label(scores.argmax(-1), fh, fw)
        want = np.where(want == IGNORE_INDEX, -1, want)
        assert (frame == want).all(), (resize, fh, fw, int((frame != want).sum()))
    if resize == "crop":
        assert (frame == -1).any()  # the cropped-off border is no class
