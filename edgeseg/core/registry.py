"""A tiny name -> builder registry that refuses duplicates and suggests close names on typos."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from edgeseg.core.errors import UsageError

T = TypeVar("T")


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_choice(value: str, choices: list[str] | tuple[str, ...], what: str) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a UsageError that lists them."""
    if value not in choices:
        raise UsageError(
            f"unknown {what} '{value}'{suggest(value, choices)}; choose one of: {', '.join(choices)}"
        )
    return value


class Registry(Generic[T]):
    """Maps names to objects (usually builders). Registration happens at import time."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("unet")``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        check_choice(name, self.names(), self.kind)
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
