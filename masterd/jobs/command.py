"""
Command placeholders: C{{frame}} (the task's first frame), C{{start}},
C{{end}} and C{{frames}} (comma-separated), expanded per task when it is
handed out. Python format specs are allowed (C{{frame:04d}}); C{{{{} and
C{}}}} are literal braces.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

PLACEHOLDERS = ("frame", "start", "end", "frames")

_formatter = string.Formatter()
_NUMBERS = re.compile(r"\d+")
#: The widest a placeholder may be padded ({frame:04d} is 4): a width or
#: precision of millions would build a string of that size per task.
MAX_WIDTH = 64


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
    @raise CommandError: if C{argument} uses an unknown placeholder or a
        format that cannot apply.
    """
    try:
        parsed = list(_formatter.parse(argument))
    except ValueError as e:
        raise CommandError(f"malformed placeholder ({e}); write {{{{ and }}}} for braces") from None
    for _, field, spec, _conversion in parsed:
        if field is None:
            continue
        if spec and ("{" in spec or "}" in spec):
            raise CommandError(f"the format of {{{field}}} may not hold another placeholder")
        for digits in _NUMBERS.findall(spec or ""):
            if len(digits) > 3 or int(digits) > MAX_WIDTH:
                raise CommandError(
                    f"the format of {{{field}}} asks for {digits} characters; at most {MAX_WIDTH}"
                )
        if field not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            shown = "{" + field + "}" if field else "{}"
            raise CommandError(f"unknown placeholder {shown}; known: {known}")
    try:
        argument.format(**_values([1, 2]))
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise CommandError(f"placeholder format cannot apply: {e}") from None


def expandCommand(command: Sequence[str], frames: Sequence[int]) -> list[str]:
    """
    The argv for a task of C{frames}.
    """
    values = _values(frames)
    return [argument.format(**values) for argument in command]
