"""
Times as the API shows them: ISO 8601 in UTC with a C{Z} suffix.
"""

from __future__ import annotations

from datetime import UTC, datetime


def isoformat(when: datetime | float | None) -> str | None:
    """
    Format an aware datetime or a POSIX timestamp as C{2026-11-28T22:50:18.123Z}.
    """
    if when is None:
        return None
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    elif when.tzinfo is None:
        raise ValueError("naive datetimes have no place in masterd")
    text = when.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def isotime(when: datetime | float) -> str:
    """
    L{isoformat} of a time that is always there.
    """
    text = isoformat(when)
    assert text is not None
    return text
