"""
Frame specs: C{"1-100"}, C{"1-100x5,200,210-215"}, or a list of integers.

A spec lists frames in the order they are to be rendered; ranges run upwards
with an optional step. A frame may appear only once in a job.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

# ASCII digits only: \d would take other scripts' digits too.
_ITEM_TEXT = r"\s*(-?[0-9]+)\s*(?:-\s*(-?[0-9]+)\s*(?:x\s*([0-9]+)\s*)?)?"
_ITEM = re.compile(rf"^{_ITEM_TEXT}$")
#: The most digits a number in a spec may have: 2^31 - 1 has ten.
MAX_DIGITS = 10
#: The grammar of a whole spec, for the OpenAPI document. This module
#: checks it, with messages that say which item is wrong; what the grammar
#: cannot say (ranges run upwards, steps from 1, each frame once, numbers
#: within MAX_FRAME, at most the configured number of frames) is a
#: FrameSpecError with C{meaning} set.
SPEC_PATTERN = rf"^{_ITEM_TEXT}(?:,{_ITEM_TEXT})*$".replace(
    "(-?[0-9]+)", f"-?[0-9]{{1,{MAX_DIGITS}}}"
).replace("([0-9]+)", f"[0-9]{{1,{MAX_DIGITS}}}")

#: The largest magnitude of a frame number (fits PostgreSQL's integer).
MAX_FRAME = 2**31 - 1


class FrameSpecError(ValueError):
    """
    The frame spec is malformed; the message says where and how.

    @ivar meaning: C{True} when the spec follows the grammar (L{SPEC_PATTERN},
        or a list of distinct integers) but names frames the master cannot
        take; C{False} when it breaks the grammar.
    """

    def __init__(self, message: str, meaning: bool = False) -> None:
        super().__init__(message)
        self.meaning = meaning


def _ranges(spec: str) -> Iterator[tuple[int, int, int]]:
    if not spec.strip():
        raise FrameSpecError("is empty")
    # The whole spec's form first, then its meaning: a spec outside the
    # grammar is always refused as such (a 400, where meaning is a 422).
    items: list[tuple[str, int, int, int]] = []
    for raw in spec.split(","):
        match = _ITEM.match(raw)
        if match is None:
            item = raw.strip() or "(empty)"
            raise FrameSpecError(
                f"{item!r} is not a frame, a range like 1-100, or a stepped range like 1-100x5"
            )
        if any(len(g.lstrip("-")) > MAX_DIGITS for g in match.groups() if g is not None):
            # Before int(): thousands of digits would cost a quadratic int().
            raise FrameSpecError(f"{raw.strip()[:40]!r} has a number out of range")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        step = int(match.group(3)) if match.group(3) is not None else 1
        items.append((raw.strip(), start, end, step))
    for shown, start, end, step in items:
        for value in (start, end):
            if abs(value) > MAX_FRAME:
                raise FrameSpecError(f"frame {value} is out of range", meaning=True)
        if end < start:
            raise FrameSpecError(f"{shown!r} runs backwards ({start} to {end})", meaning=True)
        if step < 1:
            raise FrameSpecError(f"{shown!r} has a step of {step}; steps start at 1", meaning=True)
        yield start, end, step


def countFrames(spec: str) -> int:
    """
    How many frames C{spec} names, without listing them.
    """
    return sum((end - start) // step + 1 for start, end, step in _ranges(spec))


def parseFrames(spec: str | Sequence[int], maxFrames: int = 1_000_000) -> list[int]:
    """
    The frames of a spec, in order.

    @raise FrameSpecError: if it is malformed, names a frame twice, or names
        more than C{maxFrames} frames.
    """
    if isinstance(spec, str):
        total = countFrames(spec)
        if total > maxFrames:
            raise FrameSpecError(f"names {total} frames; the limit is {maxFrames}", meaning=True)
        frames: list[int] = []
        for start, end, step in _ranges(spec):
            frames.extend(range(start, end + 1, step))
    else:
        if not spec:
            raise FrameSpecError("is empty")
        if len(spec) > maxFrames:
            raise FrameSpecError(
                f"names {len(spec)} frames; the limit is {maxFrames}", meaning=True
            )
        for value in spec:
            if not isinstance(value, int) or isinstance(value, bool):
                raise FrameSpecError(f"{value!r} is not an integer frame number")
            if abs(value) > MAX_FRAME:
                raise FrameSpecError(f"frame {value} is out of range")
        frames = list(spec)
    if len(set(frames)) != len(frames):
        seen: set[int] = set()
        for value in frames:
            if value in seen:
                # A list says uniqueItems; a spec's grammar cannot say it.
                raise FrameSpecError(
                    f"frame {value} appears more than once", meaning=isinstance(spec, str)
                )
            seen.add(value)
    return frames


def formatFrames(frames: Sequence[int]) -> str:
    """
    The shortest spec this module writes for C{frames}, in their order:
    runs of three or more with an even step become C{a-b} or C{a-bxs}.
    """
    parts: list[str] = []
    i = 0
    n = len(frames)
    while i < n:
        start = frames[i]
        if i + 2 < n and frames[i + 1] > start:
            step = frames[i + 1] - start
            j = i + 1
            while j + 1 < n and frames[j + 1] - frames[j] == step:
                j += 1
            if j - i >= 2:
                end = frames[j]
                parts.append(f"{start}-{end}" if step == 1 else f"{start}-{end}x{step}")
                i = j + 1
                continue
        parts.append(str(start))
        i += 1
    return ",".join(parts)


def chunkFrames(frames: Sequence[int], chunk: int) -> list[list[int]]:
    """
    Consecutive groups of C{chunk} frames, in order; the last may be shorter.
    """
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    return [list(frames[i : i + chunk]) for i in range(0, len(frames), chunk)]
