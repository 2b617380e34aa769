"""
Field paths as the API names them (C{tasks[3].frames}, C{metadata.a.b}), and
the slow searches that find the path of a problem the fast decoder could
only report roughly. Nothing here runs unless the input is already refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def join(path: str, key: str | int) -> str:
    """
    C{join("tasks", 3)} is C{tasks[3]}; C{join("metadata", "a")} is
    C{metadata.a}; a key that is not a plain name is quoted.
    """
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _SIMPLE_KEY.match(key):
        key = json.dumps(key, ensure_ascii=True)
        return f"{path}[{key}]" if path else f"[{key}]"
    return f"{path}.{key}" if path else key


def shown(path: str) -> str:
    return path or "(body)"


_UNSHOWABLE = re.compile("[\x00\ud800-\udfff]")


def printable(value: Any) -> Any:
    """
    C{value} (a string, or JSON values holding strings) with each NUL and
    lone surrogate written as its escape: for error messages that quote
    what a client sent, which must neither break an encoder nor hold what
    no string the master sends may hold.
    """
    if isinstance(value, str):
        return _UNSHOWABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


def badString(text: str) -> str | None:
    """
    What PostgreSQL would refuse in C{text}: a NUL, or a lone surrogate.
    """
    if "\0" in text:
        return "must not contain NUL characters (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain lone surrogates (\\ud800-\\udfff)"
    return None


def walk(value: Any, path: str) -> Iterator[tuple[str, Any, int]]:
    """
    Every value of a decoded JSON document with its path and depth (the
    root at depth 1), without recursion; a key comes as a value of its own.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        yield where, item, depth
        if isinstance(item, dict):
            for key, child in reversed(item.items()):
                keyPath = join(where, key) if isinstance(key, str) else where
                yield keyPath, key, depth + 1
                stack.append((child, keyPath, depth + 1))
        elif isinstance(item, list):
            for i in range(len(item) - 1, -1, -1):
                stack.append((item[i], join(where, i), depth + 1))


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:,]|[^\s\[\]{}:,"]+')


def deepPath(data: bytes, limit: int) -> str:
    """
    The path of the first container nested deeper than C{limit}, found by a
    scan that needs no recursion (the document may be nested thousands
    deep). Only the first C{limit} levels of the path are named.
    """
    # Each open container: [is an object, its current key or index].
    stack: list[list[Any]] = []
    expectKey = False
    for match in _TOKEN.finditer(data):
        token = match.group()
        if token in (b"{", b"["):
            if stack and not stack[-1][0]:
                stack[-1][1] += 1
            stack.append([token == b"{", -1 if token == b"[" else None])
            expectKey = token == b"{"
            if len(stack) > limit:
                path = ""
                for isObject, key in stack[:-1]:
                    if isObject and isinstance(key, str):
                        path = join(path, key)
                    elif not isObject:
                        path = join(path, max(key, 0))
                return path
        elif token in (b"}", b"]"):
            if stack:
                stack.pop()
            expectKey = False
        elif token == b",":
            expectKey = bool(stack and stack[-1][0])
        elif token == b":":
            expectKey = False
        elif expectKey and token.startswith(b'"'):
            try:
                stack[-1][1] = json.loads(token)
            except ValueError:
                stack[-1][1] = "?"
        elif stack and not stack[-1][0]:
            stack[-1][1] += 1
    return ""
