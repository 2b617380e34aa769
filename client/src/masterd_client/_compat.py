"""
What Python 3.9 and 3.10 lack and the client needs, in one place: the client
runs in the Pythons of Blender, Houdini, Maya and Nuke (3.9 and newer).
"""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone

UTC = timezone.utc

# 3.9 and 3.10's fromisoformat reads only what isoformat() writes: no "Z",
# a fraction of exactly 3 or 6 digits, an offset with its colon.
_ZULU = re.compile(r"[zZ]$")
_FRACTION = re.compile(r"([T ]\d\d:\d\d:\d\d)[.,](\d+)")
_OFFSET = re.compile(r"([+-]\d\d)(?::?(\d\d))?$")


def fromisoformat(text: str) -> datetime:
    """
    C{datetime.fromisoformat} as Python 3.11 reads the usual forms of ISO
    8601 (C{2026-11-28T22:50:18.123Z}, C{2026-11-28T23:50:18+01:00},
    C{2026-11-28 22:50:18,5+0100}), on every Python the client runs on.

    @raise ValueError: not such a time.
    """
    if sys.version_info >= (3, 11):
        return datetime.fromisoformat(text)
    normal = _ZULU.sub("+00:00", text)
    normal = _FRACTION.sub(lambda m: f"{m[1]}.{m[2][:6]:0<6}", normal, count=1)
    if len(normal) > 10:  # a time, not a date alone: its offset may lack the colon
        normal = normal[:10] + _OFFSET.sub(_offset, normal[10:], count=1)
    return datetime.fromisoformat(normal)


def _offset(match: re.Match[str]) -> str:
    # "+01", "+0100" and "+01:00" alike: "+01:00".
    return f"{match[1]}:{match[2] or '00'}"
