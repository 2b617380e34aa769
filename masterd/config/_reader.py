"""
A small reader for nested YAML mappings that collects every problem.

Validation must report all problems at once, each as ``<dotted.key>: <what is
wrong>``, and must refuse unknown keys so that a typo never passes silently.
L{Section} wraps one mapping and hands out typed values; each accessor records
the key as known, and L{Section.finish} reports whatever was left unread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING: Any = object()


class Problems:
    """
    The problems found while reading one configuration file.
    """

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, message: str) -> None:
        self.items.append((key, message))

    def __bool__(self) -> bool:
        return bool(self.items)


def _typeName(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Section:
    """
    One mapping of the configuration, at a dotted path.
    """

    def __init__(self, path: str, raw: object, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self._seen: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            problems.add(path or "(top level)", f"must be a mapping, not {_typeName(raw)}")
            raw = {}
        self._raw: Mapping[Any, Any] = raw

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self._raw and self._raw[name] is not None

    def raw(self, name: str) -> Any:
        self._seen.add(name)
        return self._raw.get(name)

    def section(self, name: str) -> Section:
        return Section(self.key(name), self.raw(name), self.problems)

    def _get(
        self,
        name: str,
        default: Any,
        check: Callable[[Any], bool],
        expected: str,
    ) -> Any:
        value = self.raw(name)
        if value is None:
            if default is _MISSING:
                self.problems.add(self.key(name), "is required")
            return None if default is _MISSING else default
        if not check(value):
            self.problems.add(self.key(name), f"must be {expected}, not {_typeName(value)}")
            return None if default is _MISSING else default
        return value

    def string(self, name: str, default: Any = _MISSING, *, empty: bool = False) -> Any:
        value = self._get(name, default, lambda v: isinstance(v, str), "a string")
        if isinstance(value, str) and not value and not empty and self.has(name):
            self.problems.add(self.key(name), "must not be empty")
        return value

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        return self._get(name, default, lambda v: isinstance(v, bool), "true or false")

    def integer(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> Any:
        value = self._get(
            name,
            default,
            lambda v: isinstance(v, int) and not isinstance(v, bool),
            "an integer",
        )
        return self._bounded(name, value, minimum, maximum)

    def number(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        positive: bool = False,
    ) -> Any:
        value = self._get(
            name,
            default,
            lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "a number",
        )
        if isinstance(value, float) and not math.isfinite(value) and self.has(name):
            self.problems.add(self.key(name), f"must be a finite number, not {value}")
            return None if default is _MISSING else default
        if positive and isinstance(value, int | float) and value <= 0 and self.has(name):
            self.problems.add(self.key(name), "must be greater than 0")
            return None if default is _MISSING else default
        value = self._bounded(name, value, minimum, maximum)
        return float(value) if isinstance(value, int | float) else value

    def _bounded(self, name: str, value: Any, minimum: float | None, maximum: float | None) -> Any:
        if not isinstance(value, int | float) or not self.has(name):
            return value
        if minimum is not None and value < minimum:
            self.problems.add(self.key(name), f"must be at least {minimum}, not {value}")
        elif maximum is not None and value > maximum:
            self.problems.add(self.key(name), f"must be at most {maximum}, not {value}")
        return value

    def items(self, name: str, default: Any = _MISSING) -> Any:
        """
        A list value, unchecked element by element.
        """
        return self._get(name, default, lambda v: isinstance(v, list), "a list")

    def finish(self) -> None:
        """
        Report every key of this mapping that no accessor asked for.
        """
        for name in self._raw:
            if name not in self._seen:
                self.problems.add(self.key(str(name)), "is not a known key")
