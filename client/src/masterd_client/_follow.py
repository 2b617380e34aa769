"""
Following a task's log as it grows, one poll at a time, so that a caller can
pace the polls (and survive a failed one) as it likes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._base import LogChunk

if TYPE_CHECKING:
    from ._jobs import Task


class LogFollower:
    """
    Reads what is new in a task's log at each L{poll}.

    The master numbers an attempt's lines from 1 and tells the next C{after}
    to ask for (C{X-Masterd-Next-After}). Without a pinned attempt the
    master answers for the task's current one; when a retry starts a new
    attempt, the rest of the old one is read first, then the new one from
    its first line, so that no line is skipped or shown twice.

    A poll that raises changes nothing: the next one asks for the same lines.
    """

    def __init__(self, task: Task, attempt: int | None = None, after: int = 0) -> None:
        self.task = task
        self.pinned = attempt
        self.attempt = attempt
        self.after = after
        self.finished = False

    def poll(self) -> list[LogChunk]:
        """
        The chunks of log that came since the last poll (none, one, or two
        when an attempt ended and another began); sets C{finished} once the
        task is finished and its whole log has been read.
        """
        # The state first: an agent sends its last lines before it reports
        # the task finished, so the read after a finished state is complete.
        finished = self.task.refresh().is_finished
        chunks: list[LogChunk] = []
        after = self.after
        chunk = self.task.read_log(self.pinned, after)
        if self.pinned is None and self.attempt is not None and chunk.attempt != self.attempt:
            if self.attempt >= 1:
                rest = self.task.read_log(self.attempt, after)
                if rest.text:
                    chunks.append(rest)
            if after:
                chunk = self.task.read_log(chunk.attempt, 0)
        if chunk.text:
            chunks.append(chunk)
        self.attempt = chunk.attempt
        self.after = chunk.next_after
        self.finished = finished
        return chunks
