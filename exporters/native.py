"""Keep converters' native start-up noise out of the user's terminal, and import triton early.

edgeseg's default install has no TensorFlow (TFLite files come from onnx2tf 2.x and ai-edge-quantizer). A user's
environment may still hold one, and some packages import it when it is there (coremltools, mediapipe): with
tensorflow 2.21 and torch 2.14's triton 3.8 in one process, importing TensorFlow BEFORE triton crashes the
interpreter (SIGSEGV inside triton's bundled LLVM; see STACK.md), so modules that may pull it in call
:func:`preload_triton` first.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Iterator


def preload_triton() -> None:
    """Import triton (when installed) before anything may load TensorFlow."""
    import torch  # noqa: F401

    if "tensorflow" in sys.modules:
        return
    with contextlib.suppress(ImportError):
        import triton  # noqa: F401


@contextlib.contextmanager
def quiet_native(enabled: bool = True) -> Iterator[io.StringIO]:
    """Silence stdout/stderr, including C-level writes (converters print pages of logs).

    The captured Python-level text is yielded so that a caller can show it when a conversion fails.
    Disabled when EDGESEG_DEBUG is set.
    """
    buf = io.StringIO()
    if not enabled or os.environ.get("EDGESEG_DEBUG"):
        yield buf
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield buf
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


@contextlib.contextmanager
def without_modules(*names: str) -> Iterator[None]:
    """Import a package that probes for optional packages without loading them. A ``None`` entry in
    ``sys.modules`` makes such an ``import name`` fail as if the package were absent (``ModuleNotFoundError``); the
    entries are removed again afterwards, so the caller's own later imports work. A package already loaded (the
    caller's own code imported it) is left alone."""
    hidden = [n for n in names if n not in sys.modules]
    for n in hidden:
        sys.modules[n] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for n in hidden:
            if sys.modules.get(n, 0) is None:
                del sys.modules[n]


def without_tensorflow() -> contextlib.AbstractContextManager[None]:
    """coremltools imports TensorFlow whenever it is installed (its ``_deps`` probe; 7-8 s and ~600 MB) for a
    frontend edgeseg never uses, mediapipe's metadata module to open files through ``tf.io.gfile``: both are
    imported with ``tensorflow`` hidden (:func:`without_modules`)."""
    return without_modules("tensorflow")
