"""
Command placeholders: C{{frame}} (the task's first frame), C{{start}},
C{{end}} and C{{frames}} (comma-separated), expanded per task when it is
handed out. A plain subset of Python's format specs is allowed
(C{{frame:04d}}, C{{frame:>6}}, C{{frames:<20}}); C{{{{} and C{}}}} are
literal braces.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

PLACEHOLDERS = ("frame", "start", "end", "frames")

_formatter = string.Formatter()
_NUMBERS = re.compile(r"\d+")
#: The widest a placeholder may be padded ({frame:04d} is 4): a width of
#: millions would build a string of that size per task.
MAX_WIDTH = 64

# The grammar of an argument, stated once: the OpenAPI document publishes it
# and checkArgument enforces it, so that what the document calls valid is
# exactly what the master takes. Literal text, {{ and }} for braces, and
# placeholders with a plain subset of Python's format specs: an alignment,
# a sign and zero padding for the numbers, an alignment for {frames} (a
# string), a width of at most MAX_WIDTH. No fill characters, precisions or
# conversions: none has a use in an argv, and each is a way to build strings
# the master did not mean to.
_WIDTH = r"(?:[1-5]?[0-9]|6[0-4])"
_NUMBER_SPEC = rf"[<>=^]?[-+ ]?0?{_WIDTH}?d?"
_TEXT_SPEC = rf"[<>^]?{_WIDTH}?s?"
_PLACEHOLDER = rf"\{{(?:(?:frame|start|end)(?::{_NUMBER_SPEC})?|frames(?::{_TEXT_SPEC})?)\}}"
_ARGUMENT = rf"(?:[^{{}}]|\{{\{{|\}}\}}|{_PLACEHOLDER})*"
_ARGUMENT_RE = re.compile(_ARGUMENT)
#: The same grammar for the OpenAPI document (JSON Schema patterns search).
ARGUMENT_PATTERN = f"^{_ARGUMENT}$"


class CommandError(ValueError):
    pass


def _values(frames: Sequence[int]) -> dict[str, object]:
    return {
        "frame": frames[0],
        "start": min(frames),
        "end": max(frames),
        "frames": ",".join(str(f) for f in frames),
    }


def checkArgument(argument: str) -> None:
    """
    @raise CommandError: if C{argument} does not follow the grammar
        (L{ARGUMENT_PATTERN}); the message says what is wrong.
    """
    if _ARGUMENT_RE.fullmatch(argument) is None:
        raise CommandError(_diagnose(argument))


def _diagnose(argument: str) -> str:
    """
    Why C{argument} is outside the grammar, in words.
    """
    try:
        parsed = list(_formatter.parse(argument))
    except ValueError as e:
        return f"malformed placeholder ({e}); write {{{{ and }}}} for braces"
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        shown = "{" + field + "}" if field else "{}"
        if field not in PLACEHOLDERS:
            return f"unknown placeholder {shown}; known: {known}"
        if conversion:
            return f"{shown} may not have a conversion (!{conversion})"
        if spec and ("{" in spec or "}" in spec):
            return f"the format of {shown} may not hold another placeholder"
        for digits in _NUMBERS.findall(spec or ""):
            if len(digits) > 3 or int(digits) > MAX_WIDTH:
                return f"the format of {shown} asks for {digits} characters; at most {MAX_WIDTH}"
        if spec and _ARGUMENT_RE.fullmatch("{" + field + ":" + spec + "}") is None:
            example = "{frames:<20}" if field == "frames" else "{" + field + ":04d}"
            return (
                f"the format {spec!r} of {shown} is not one the master takes: an alignment, "
                f"a sign, zero padding and a width up to {MAX_WIDTH}, as in {example}"
            )
    return f"is not an argument the master takes; placeholders are {known}"


def expandCommand(command: Sequence[str], frames: Sequence[int]) -> list[str]:
    """
    The argv for a task of C{frames}.
    """
    values = _values(frames)
    return [argument.format(**values) for argument in command]
