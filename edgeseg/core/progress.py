"""A small progress-bar wrapper over rich, quiet when output is not a terminal or --quiet is given."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator


class _Bar:
    def __init__(self, progress, task, console) -> None:
        self._p, self._t, self._c = progress, task, console

    def advance(self, description: str | None = None, n: int = 1) -> None:
        if self._p is not None:
            self._p.update(self._t, advance=n, description=description or None)

    def reset(self, total: int | None, description: str) -> None:
        """Start over with a new total (e.g. the next split)."""
        if self._p is not None:
            self._p.update(self._t, total=total, completed=0, description=description)

    def note(self, text: str) -> None:
        if self._c is not None:
            self._c.print(text)


@contextlib.contextmanager
def progress_bar(total: int | None, description: str, disable: bool = False, completed: int = 0) -> Iterator[_Bar]:
    """A rich progress bar (stderr); ``note`` prints a line above it. Disabled: a no-op object."""
    if disable:
        yield _Bar(None, None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=not sys.stderr.isatty(),
                  disable=not console.is_terminal) as p:
        task = p.add_task(description, total=total, completed=completed)
        yield _Bar(p, task, console)
