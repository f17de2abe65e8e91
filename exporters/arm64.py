"""ARM kernels without a phone: run a ``.tflite`` with LiteRT's aarch64 build under user-mode emulation.

A phone runs other code than this x86 host: ARM NEON / dot-product kernels in XNNPACK, and LiteRT's builtin
kernels wherever XNNPACK is off. :func:`setup` provisions, into a cache folder, everything that takes:

* ``bin/qemu-aarch64``: the static user-mode emulator from Debian's ``qemu-user`` **10** (trixie). bookworm's 7.2
  segfaults in XNNPACK's cpuinfo and computes wrong int8 with SME on (STACK.md);
* ``root/``: an arm64 Debian bookworm root with Python 3.11 (``mmdebstrap --variant=extract``: the packages are
  unpacked, nothing is run, no binfmt, no chroot);
* ``site/``: the aarch64 wheels of the host's own ``ai-edge-litert`` and ``numpy`` versions, from PyPI.

The cache is built in a temporary sibling and renamed into place when complete (never a half-made cache);
``manifest.json`` records what is in it. :func:`run` executes :mod:`exporters.arm64_worker` as
``QEMU_CPU=<profile> qemu-aarch64 -L root root/usr/bin/python3 arm64_worker.py ...``: XNNPACK picks its kernels from
the emulated CPU's features, so ``cortex-a76`` (dot-product + fp16 arithmetic) and ``cortex-a53`` (neither) run
different ARM code paths. Emulation is 10-100x slower than native: a few images, not a test split.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from exporters.atomic import remove_stale
from exporters.base import ExporterError, ToolchainMissing
from exporters.tflite import KERNEL_NAMES, KERNEL_PATHS, TFLiteRunner

#: the emulated CPU profiles (qemu's names) and what they have that matters to XNNPACK's kernel choice
CPUS = {"cortex-a76": "dot-product + fp16 arithmetic (most phones since 2019)",
        "cortex-a53": "no dot-product, no fp16 arithmetic (entry-level phones)"}
#: LiteRT's CPU kernel paths: XNNPACK (the default delegate), builtin (XNNPACK off: ``setUseXNNPACK(false)``, or
#: an op XNNPACK refuses), reference (LiteRT's reference kernels: no app ships them; the arithmetic's ground truth)
KERNELS = KERNEL_PATHS
MIRROR = "http://deb.debian.org/debian"
QEMU_SUITE, ROOT_SUITE = "trixie", "bookworm"
MIN_QEMU = 10
SETUP_COMMAND = "edgeseg device setup arm64"
WORKER = Path(__file__).with_name("arm64_worker.py")


class Arm64Missing(ToolchainMissing):
    """The emulator or the aarch64 runtime is not provisioned, or cannot be."""


def cache_dir() -> Path:
    """``$EDGESEG_CACHE/arm64``, else ``$XDG_CACHE_HOME/edgeseg/arm64``, else ``~/.cache/edgeseg/arm64``."""
    base = os.environ.get("EDGESEG_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeseg"
    return Path(base) / "arm64"


def manifest(cache: Path | None = None) -> dict | None:
    """What a complete cache holds (its ``manifest.json``), or None when there is none."""
    path = Path(cache or cache_dir()) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _host_versions() -> dict[str, str]:
    out = {}
    for dist in ("ai-edge-litert", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            raise Arm64Missing(f"{dist} is not installed here; the aarch64 runtime takes the host's version of it "
                               f"(install edgeseg's tflite extra: make install)") from None
    return out


def require(cache: Path | None = None) -> dict:
    """The manifest of a ready cache whose LiteRT matches the host's; else :class:`Arm64Missing` saying how."""
    cache = Path(cache or cache_dir())
    found = manifest(cache)
    if found is None:
        raise Arm64Missing(f"no emulated arm64 runtime in '{cache}'; provision it once (about 30 s, 250 MB, needs "
                           f"Debian's apt mirror and PyPI): {SETUP_COMMAND}")
    want = _host_versions()
    if found.get("wheels") != want:
        raise Arm64Missing(f"the arm64 runtime in '{cache}' has {found.get('wheels')}, the host {want}; "
                           f"provision it again: {SETUP_COMMAND} --force")
    return found


def _run(cmd: Sequence[str], what: str, fix: str, timeout: float = 900, **kw) -> str:
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    except FileNotFoundError:
        raise Arm64Missing(f"{what}: '{cmd[0]}' is not installed; {fix}") from None
    except subprocess.TimeoutExpired:
        raise Arm64Missing(f"{what}: no answer in {timeout:.0f} s ({' '.join(cmd[:3])} ...); {fix}") from None
    if res.returncode != 0:
        tail = (res.stderr or res.stdout)[-1200:]
        offline = any(s in tail for s in ("Could not resolve", "Failed to fetch", "Temporary failure", "Network is",
                                          "No matching distribution", "Connection"))
        hint = ("cannot reach the package mirror (no network?): provisioning downloads from Debian's apt mirror "
                f"({MIRROR}) and PyPI" if offline else fix)
        raise Arm64Missing(f"{what} failed (exit {res.returncode}): {hint}\n{tail}")
    return res.stdout


def _mmdebstrap(log: Callable[[str], None]) -> str:
    found = shutil.which("mmdebstrap")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise Arm64Missing("mmdebstrap is missing and this system has no apt-get: provisioning the arm64 runtime "
                           "needs a Debian or Ubuntu host with mmdebstrap (apt-get install mmdebstrap)")
    if os.geteuid() != 0:
        raise Arm64Missing("mmdebstrap is missing: install it as root (sudo apt-get install mmdebstrap), then run "
                           f"{SETUP_COMMAND} again")
    log("installing mmdebstrap (apt-get) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # wait for another apt/dpkg run (up to 5 min) instead of failing on its lock
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", "--no-install-recommends",
               "mmdebstrap"]
    try:
        _run(install, "apt-get install mmdebstrap", "install mmdebstrap by hand", env=env)
    except Arm64Missing:  # stale or missing package lists: refresh them once
        _run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-q"], "apt-get update", "check the apt sources",
             env=env)
        _run(install, "apt-get install mmdebstrap", "install mmdebstrap by hand", env=env)
    return shutil.which("mmdebstrap") or "mmdebstrap"


def _extract(mm: str, suite: str, arch: str, packages: str, dst: Path) -> None:
    mode = "root" if os.geteuid() == 0 else "unshare"
    _run([mm, f"--mode={mode}", f"--arch={arch}", "--variant=extract", f"--include={packages}", suite, str(dst),
          MIRROR], f"mmdebstrap ({packages} from Debian {suite}, {arch})",
         "run as root, or allow unprivileged user namespaces for mmdebstrap's unshare mode")


def qemu_version(qemu: Path) -> str:
    out = _run([str(qemu), "--version"], "qemu-aarch64 --version", "provision again")
    return out.split("version", 1)[-1].split()[0] if "version" in out else out.strip()


def setup(cache: Path | None = None, force: bool = False, log: Callable[[str], None] = print) -> dict:
    """Provision the emulator and the aarch64 runtime into ``cache`` (idempotent: a ready cache whose LiteRT
    matches the host's is kept unless ``force``); returns the manifest."""
    cache = Path(cache or cache_dir())
    if not force:
        with contextlib.suppress(Arm64Missing):
            return require(cache)
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise Arm64Missing(f"arm64 emulation is provisioned on x86-64 Linux hosts; this is {platform.system()} "
                           f"{platform.machine()}")
    wheels = _host_versions()
    cache.parent.mkdir(parents=True, exist_ok=True)
    with _setup_lock(cache):  # one provisioning at a time; a second process waits, then finds the cache ready
        if not force:
            with contextlib.suppress(Arm64Missing):
                return require(cache)
        return _provision(cache, wheels, log)


@contextlib.contextmanager
def _setup_lock(cache: Path):
    import fcntl

    with open(cache.parent / f".{cache.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _provision(cache: Path, wheels: dict[str, str], log: Callable[[str], None]) -> dict:
    remove_stale(cache)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.{os.getpid()}.", suffix=".tmp", dir=cache.parent))
    t0 = time.time()
    try:
        mm = _mmdebstrap(log)
        log(f"unpacking qemu-user from Debian {QEMU_SUITE} ...")
        _extract(mm, QEMU_SUITE, "amd64", "qemu-user", tmp / "qemu-pkg")
        (tmp / "bin").mkdir()
        qemu = tmp / "bin" / "qemu-aarch64"
        shutil.copy2(tmp / "qemu-pkg" / "usr" / "bin" / "qemu-aarch64", qemu)
        shutil.rmtree(tmp / "qemu-pkg")
        version = qemu_version(qemu)
        if int(version.split(".")[0]) < MIN_QEMU:
            raise Arm64Missing(f"Debian {QEMU_SUITE}'s qemu-user is {version}; XNNPACK needs qemu >= {MIN_QEMU}")
        log(f"unpacking an arm64 Debian {ROOT_SUITE} root with Python ...")
        _extract(mm, ROOT_SUITE, "arm64", "python3,libstdc++6", tmp / "root")
        log(f"downloading the aarch64 wheels of {', '.join(f'{k}=={v}' for k, v in wheels.items())} ...")
        plat = ["--platform", "manylinux_2_27_aarch64", "--platform", "manylinux2014_aarch64", "--only-binary=:all:",
                "--python-version", "3.11"]
        pins = [f"{k}=={v}" for k, v in wheels.items()]
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        _run(pip + ["download", "-d", str(tmp / "wheels"), *plat, *pins], "pip download (aarch64 wheels)",
             "check that PyPI is reachable")
        _run(pip + ["install", "--no-deps", "--target", str(tmp / "site"), *plat,
                    *sorted(str(p) for p in (tmp / "wheels").glob("*.whl"))], "pip install --target (aarch64)",
             "provision again")
        shutil.rmtree(tmp / "wheels")
        found = {"schema": "edgeseg.arm64/1", "qemu": version, "qemu_from": f"Debian {QEMU_SUITE} qemu-user",
                 "root": f"Debian {ROOT_SUITE} arm64 (mmdebstrap --variant=extract python3 libstdc++6)",
                 "wheels": wheels, "seconds": round(time.time() - t0, 1)}
        probe = _probe(tmp)
        if probe.get("machine") != "aarch64":
            raise Arm64Missing(f"the emulated Python reports machine '{probe.get('machine')}', not aarch64")
        found["python"] = probe["python"]
        (tmp / "manifest.json").write_text(json.dumps(found, indent=2) + "\n")
        if cache.exists():
            shutil.rmtree(cache)
        os.replace(tmp, cache)
        found["size_mb"] = round(sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 1e6)
        log(f"arm64 runtime ready in '{cache}' ({found['size_mb']} MB, {found['seconds']:.0f} s)")
        return found
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _env(cache: Path, cpu: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_"))}
    return {**env, "QEMU_CPU": cpu, "PYTHONPATH": str(cache / "site"), "PYTHONNOUSERSITE": "1"}


def _python(cache: Path) -> list[str]:
    return [str(cache / "bin" / "qemu-aarch64"), "-L", str(cache / "root"), str(cache / "root" / "usr" / "bin" / "python3")]


def _probe(cache: Path) -> dict:
    code = "import json, platform; print(json.dumps({'machine': platform.machine(), 'python': platform.python_version()}))"
    out = _run(_python(cache) + ["-c", code], "emulated python3", f"provision again: {SETUP_COMMAND} --force",
               timeout=120, env=_env(cache, "cortex-a76"))
    return json.loads(out.strip().splitlines()[-1])


def check_choices(cpus: Sequence[str], kernels: Sequence[str]) -> None:
    for c in cpus:
        if c not in CPUS:
            raise ExporterError(f"unknown arm64 CPU profile '{c}'; choose from {', '.join(CPUS)}")
    for k in kernels:
        if k not in KERNELS:
            raise ExporterError(f"unknown kernel path '{k}'; choose from {', '.join(KERNELS)}")


def run(model: Path, x: np.ndarray, cpu: str, kernels: Sequence[str], threads: int = 2,
        cache: Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Run the model-ready batch ``x`` ([N, H, W, C], the input tensor's dtype) through ``model`` on the emulated
    ``cpu`` for every kernel path; returns ``({kernel: raw outputs}, info)`` (info: the machine and CPU features
    the interpreter saw, the LiteRT version, seconds per path)."""
    cache = Path(cache or cache_dir())
    require(cache)
    check_choices([cpu], kernels)
    with tempfile.TemporaryDirectory(prefix="edgeseg-arm64-") as d:
        inputs, out = Path(d) / "x.npz", Path(d) / "y.npz"
        np.savez(inputs, x=np.ascontiguousarray(x))
        t0 = time.time()
        _run(_python(cache) + [str(WORKER), str(Path(model).resolve()), str(inputs), str(out), ",".join(kernels),
                               str(threads)], f"LiteRT on emulated {cpu}", f"check '{model}' on the host first",
             timeout=3600, env=_env(cache, cpu))
        with np.load(out) as z:
            ys = {k: z["y_" + k] for k in kernels}
            info = json.loads(str(z["info"]))
        info["wall_seconds"] = round(time.time() - t0, 2)
    return ys, info


class Session:
    """Every kernel path of one CPU profile in one emulated process per input batch: :meth:`runner` gives one
    callable per path, and the first of them to see a batch runs all paths on it (the emulated interpreter's
    start-up, ~3-5 s, is paid once per batch, not once per path)."""

    def __init__(self, model: Path, cpu: str, kernels: Sequence[str], threads: int = 2,
                 cache: Path | None = None) -> None:
        self.model, self.cpu, self.kernels, self.threads, self.cache = Path(model), cpu, tuple(kernels), threads, cache
        self.info: dict = {}
        self._done: dict[bytes, dict[str, np.ndarray]] = {}

    def runner(self, kernel: str) -> Callable[[np.ndarray], np.ndarray]:
        def call(x: np.ndarray) -> np.ndarray:
            key = _key(x)
            if key not in self._done:
                self._done[key], info = run(self.model, x, self.cpu, self.kernels, self.threads, self.cache)
                secs = self.info.get("seconds", {})
                self.info = {**info, "seconds": {k: round(secs.get(k, 0) + v, 2) for k, v in info["seconds"].items()}}
            return self._done[key][kernel]
        return call


def _key(x: np.ndarray) -> bytes:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(x).tobytes()).digest() + str(x.shape).encode()


#: the kernel paths the bundle's app code runs: LiteRT's Interpreter and MediaPipe's ImageSegmenter both apply
#: XNNPACK by default on the CPU (ops XNNPACK does not take run on builtin kernels inside that same path)
APP_KERNELS = ("xnnpack",)


@dataclass
class KernelPath:
    """One way the file can run: where (the host, or an emulated ARM CPU profile) and on which kernels; whether
    the gate takes it; the digest of every raw output it produced (bit-exactness between paths)."""

    device: str
    cpu: str
    kernels: str
    runner: object
    gated: bool
    digests: list[str] = field(default_factory=list)
    session: Session | None = None

    @property
    def name(self) -> str:
        where = "x86-64" if self.device == "host" else f"arm64 {self.cpu}"
        return f"{where} {self.kernels}"

    def info(self) -> dict:
        out = {"device": self.device, "cpu": self.cpu, "kernels": self.kernels, "gated": self.gated}
        if self.session is not None:
            seen = self.session.info
            out.update({"machine": seen.get("machine"), "cpu_features": seen.get("cpu_features"),
                        "emulated_seconds": (seen.get("seconds") or {}).get(self.kernels)})
        else:
            out["machine"] = platform.machine()
        return out


def _record(path: KernelPath) -> None:
    import hashlib

    inner = path.runner.execute

    def execute(x: np.ndarray) -> np.ndarray:
        y = inner(x)
        path.digests += [hashlib.sha1(np.ascontiguousarray(y[i]).tobytes()).hexdigest() for i in range(len(y))]
        return y

    path.runner.execute = execute


def kernel_paths(model: Path, threads: int = 2, device: str = "host", cpus: Sequence[str] = tuple(CPUS),
                 kernels: Sequence[str] | None = None, gate: Sequence[str] = APP_KERNELS,
                 cache: Path | None = None, host_cpu: str = "") -> list[KernelPath]:
    """The runners of every path a check asks for. ``device="host"``: ``kernels`` (default xnnpack) on this CPU;
    ``"arm64"``: the host's XNNPACK (the baseline every path is compared with bit for bit) and, on each emulated
    CPU profile, ``kernels`` (default all three). ``gate``: the kernel paths whose parity decides the verdict.
    ``host_cpu``: the host CPU's name for the record (default: its machine type)."""
    if device not in ("host", "arm64"):
        raise ExporterError(f"unknown device '{device}' (host, arm64)")
    kernels = tuple(kernels or (("xnnpack",) if device == "host" else KERNELS))
    check_choices(cpus if device == "arm64" else (), kernels)
    check_choices((), gate)
    out = []
    host = kernels if device == "host" else ("xnnpack",)
    for k in host:
        out.append(KernelPath("host", host_cpu or platform.machine(), k, TFLiteRunner(model, threads, k), k in gate))
    if device == "arm64":
        litert = require(cache)["wheels"]["ai-edge-litert"]
        for cpu in cpus:
            session = Session(model, cpu, kernels, threads, cache)
            for k in kernels:
                runtime = f"LiteRT {litert} on emulated arm64 {cpu}, {KERNEL_NAMES[k]}, {threads} threads"
                out.append(KernelPath("arm64", cpu, k, TFLiteRunner(model, threads, k, session.runner(k), runtime),
                                      k in gate, session=session))
    for p in out:
        _record(p)
    return out
