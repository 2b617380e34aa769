"""
How masterctl shows things to a person: aligned tables, key/value blocks,
compact frame lists, times, sizes and progress bars.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

#: Column headers ending in this are right-aligned (numbers).
RIGHT = ">"
NONE = "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """
    Columns padded to their widest cell, two spaces apart; a header written
    C{"PRI>"} is right-aligned. The last column is not padded, so that lines
    carry no trailing blanks.
    """
    names = [h.removesuffix(RIGHT) for h in headers]
    right = [h.endswith(RIGHT) for h in headers]
    cells = [[cell_text(c) for c in row] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    lines = []
    for row in [names, *cells]:
        parts = []
        for i, text in enumerate(row):
            last = i == len(row) - 1
            if right[i]:
                parts.append(text.rjust(widths[i]))
            else:
                parts.append(text if last else text.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    """
    One C{key  value} line each, the values aligned.
    """
    pairs = [(k, cell_text(v)) for k, v in pairs]
    width = max((len(k) for k, _ in pairs), default=0)
    return "".join(f"{k.ljust(width)}  {v}".rstrip() + "\n" for k, v in pairs)


def cell_text(value: object) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    # One line per cell, whatever a title or an error message holds.
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def shorten(text: str | None, width: int) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def dump_json(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def frames_text(frames: Sequence[int], width: int = 40) -> str:
    """
    Frames as a person writes them: runs of consecutive frames as C{a-b},
    C{1-10,20,30-31}; cut short with C{…} past C{width} characters.
    """
    parts: list[str] = []
    i = 0
    while i < len(frames):
        j = i
        while j + 1 < len(frames) and frames[j + 1] == frames[j] + 1:
            j += 1
        parts.append(str(frames[i]) if i == j else f"{frames[i]}-{frames[j]}")
        i = j + 1
    return shorten(",".join(parts), width) or ""


def time_text(when: datetime | None) -> str:
    """
    An aware time in the local timezone, to the second, with its offset.
    """
    if when is None:
        return NONE
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def duration_text(seconds: float | None) -> str:
    """
    C{45s}, C{12m05s}, C{3h02m}, C{2d04h}.
    """
    if seconds is None:
        return NONE
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def ago_text(when: datetime | None, now: datetime) -> str:
    if when is None:
        return NONE
    return duration_text((now - when).total_seconds()) + " ago"


def bar(fraction: float, width: int = 30) -> str:
    """
    C{[#########---------------------]}: ASCII, for any terminal and log.
    """
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def percent(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"
