"""
How masterctl shows things to a person: aligned tables, key/value blocks,
compact frame lists, times, sizes and progress bars.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
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


#: A run of whitespace that holds more than spaces (a line break, a tab).
_BREAK = re.compile(r" *[^\S ]\s*")


def cell_text(value: object) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, str):
        return str(value)
    # One line per cell, whatever a title or an error message holds; runs
    # of spaces are kept (inside a quoted argument they matter).
    return _BREAK.sub(" ", value).strip()


def shell_word(text: str) -> str:
    """
    C{text} as a POSIX shell reads it back as one word: as it is when it is
    safe (C{render}, C{/shots/10}), else quoted (C{'shot 10'}), as
    L{shlex.quote} does. A word holding a control character (a line break)
    is written C{$'a\\nb'} instead (bash, zsh, ksh), so that it stays on
    one line.
    """
    if not any(_is_control(c) for c in text):
        return shlex.quote(text)
    return "$'" + "".join(_ansi_c(c) for c in text) + "'"


_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _is_control(c: str) -> bool:
    return ord(c) < 32 or ord(c) == 127


def _ansi_c(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    return f"\\x{ord(c):02x}" if _is_control(c) else c


def command_text(argv: Sequence[str]) -> str:
    """
    An argv as one would type it: C{sh -c 'echo {frame}; sleep 1'}
    (L{shlex.join}, but one line whatever the arguments hold).
    """
    return " ".join(shell_word(arg) for arg in argv)


def title_text(title: str) -> str:
    """
    A title inside a line of other fields: shell-quoted when it holds a
    space, a quote or another character a shell would read (C{'shot 10'}),
    so that where it begins and ends is plain.
    """
    return shell_word(title)


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


SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def bytes_text(count: float) -> str:
    """
    C{512 B}, C{1.5 KiB}, C{20.4 GiB}: powers of 1024, one decimal.
    """
    value = float(count)
    unit = 0
    while abs(value) >= 1024 and unit < len(SIZE_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.0f} B" if unit == 0 else f"{value:.1f} {SIZE_UNITS[unit]}"


def mib_text(mib: float) -> str:
    """
    A size in MiB (the agents' C{_mb} figures are 1024 * 1024 bytes).
    """
    return bytes_text(mib * 1024 * 1024)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _pair(used: object, free: object) -> str | None:
    """
    C{3.1 GiB used / 20.4 GiB free} from MiB, or the half that is known.
    """
    known = [(what, _number(n)) for what, n in (("used", used), ("free", free))]
    halves = [f"{mib_text(n)} {what}" for what, n in known if n is not None]
    return " / ".join(halves) or None


def _loads(load: object) -> str | None:
    """
    C{0.2 0.4 0.5} from a load average or a list of them.
    """
    values = load if isinstance(load, list) else [load]
    numbers = [n for n in map(_number, values) if n is not None]
    if not numbers or len(numbers) != len(values):
        return None
    return " ".join(f"{round(n, 2):g}" for n in numbers)


def usage_text(usage: Mapping[str, Any]) -> str:
    """
    An agent's last reported usage for a person:
    C{cpu 12 %, load 0.2 0.4 0.5, ram 3.1 GiB used / 20.4 GiB free, disk 80.3 GiB free}.
    Anything this version does not know is shown as it is, last; the I/O
    counters are L{io_text}'s.
    """
    rest = {key: value for key, value in usage.items() if key != "io"}
    parts: list[str] = []
    cpu = _number(rest.get("cpu_percent"))
    if cpu is not None:
        parts.append(f"cpu {cpu:.0f} %")
        del rest["cpu_percent"]
    if (load := _loads(rest.get("load_avg"))) is not None:
        parts.append(f"load {load}")
        del rest["load_avg"]
    if ram := _pair(rest.pop("ram_used_mb", None), rest.pop("ram_free_mb", None)):
        parts.append(f"ram {ram}")
    if disk := _pair(None, rest.pop("disk_free_mb", None)):
        parts.append(f"disk {disk}")
    for key, value in sorted(rest.items()):
        shown = value if isinstance(value, (str, int, float)) else json.dumps(value)
        parts.append(f"{key} {shown}")
    return ", ".join(parts)


def io_text(usage: Mapping[str, Any]) -> str:
    """
    The I/O counters of an agent's usage (since its machine booted):
    C{disk 87.0 MiB read / 1.2 MiB written, net 7.3 MiB in / 747.5 KiB out}.
    """
    io = usage.get("io")
    if not isinstance(io, Mapping):
        return ""
    parts = []
    for name, first, second in (
        ("disk", ("disk_read_bytes", "read"), ("disk_write_bytes", "written")),
        ("net", ("net_recv_bytes", "in"), ("net_sent_bytes", "out")),
    ):
        halves = [f"{bytes_text(n)} {what}" for key, what in (first, second)
                  if (n := _number(io.get(key))) is not None]  # fmt: skip
        if halves:
            parts.append(f"{name} {' / '.join(halves)}")
    return ", ".join(parts)
