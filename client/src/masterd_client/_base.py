"""
What every model shares: the JSON document it wraps, how it reads its
fields, and how it follows hrefs to other resources.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ._compat import UTC, fromisoformat
from ._errors import MasterdError
from ._http import Transport

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's since 3.11

T = TypeVar("T")

FINISHED_JOB_STATES = frozenset({"done", "failed", "canceled"})
FINISHED_TASK_STATES = frozenset({"done", "failed", "canceled"})


def parse_time(value: object) -> datetime | None:
    """
    An API time (ISO 8601 in UTC, C{2026-11-28T22:50:18.123Z}) as an aware
    datetime; C{None} stays C{None}. A time without an offset is taken as
    UTC, which is what the API means by every time it sends.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise MasterdError(0, "invalid_response", f"a time must be a string, not {value!r}")
    try:
        when = fromisoformat(value)
    except ValueError:
        raise MasterdError(0, "invalid_response", f"not an ISO 8601 time: {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def ref_id(ref: object) -> Any:
    """
    The C{id} of a reference like C{{"id": 42, "href": "/api/v1/jobs/42"}}.
    """
    if isinstance(ref, Mapping):
        return ref.get("id")
    return None


def ref_href(ref: object, kind: str) -> str:
    if isinstance(ref, Mapping) and isinstance(ref.get("href"), str):
        return str(ref["href"])
    raise MasterdError(0, "invalid_response", f"the document has no {kind} reference")


def iterate_pages(
    transport: Transport,
    href: str,
    query: Mapping[str, Any] | None,
    make: Callable[[Mapping[str, Any]], T],
) -> Iterator[T]:
    """
    Every item of a list, page after page: C{{"items": [...], "next": href}}
    until C{next} is null. A page is fetched only when the previous one is
    used up, so stopping early costs nothing more.
    """
    page = transport.get_json(href, query)
    seen: set[str] = set()
    while True:
        if not isinstance(page, Mapping) or not isinstance(page.get("items"), list):
            raise MasterdError(0, "invalid_response", f"{href} did not answer a list")
        for item in page["items"]:
            yield make(item)
        following = page.get("next")
        # A server bug that hands back the same page must not loop forever.
        if not isinstance(following, str) or following in seen:
            return
        seen.add(following)
        page = transport.get_json(following)


def list_items(
    transport: Transport, href: str, query: Mapping[str, Any] | None = None
) -> list[Any]:
    """
    The items of a list the API answers in one piece (no C{next}).
    """
    page = transport.get_json(href, query)
    if not isinstance(page, Mapping) or not isinstance(page.get("items"), list):
        raise MasterdError(0, "invalid_response", f"{href} did not answer a list")
    return list(page["items"])


class Record:
    """
    A JSON document of the API, wrapped. C{raw} is the document exactly as
    the server sent it (for fields this version of the client does not
    know, and for C{--json} output).
    """

    def __init__(self, transport: Transport, raw: Mapping[str, Any]) -> None:
        self._transport = transport
        self.raw: dict[str, Any] = dict(raw)

    def _time(self, name: str) -> datetime | None:
        return parse_time(self.raw.get(name))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.raw!r}>"


class Resource(Record):
    """
    A record with an href of its own, which C{refresh} reads again.
    """

    @property
    def href(self) -> str:
        return str(self.raw["href"])

    def refresh(self) -> Self:
        """
        Read this resource again from the master; returns itself, updated.
        """
        return self._update(self._transport.get_json(self.href))

    def _update(self, document: object) -> Self:
        if not isinstance(document, Mapping) or "href" not in document:
            raise MasterdError(0, "invalid_response", f"{self.href} did not answer a document")
        self.raw = dict(document)
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resource) or type(other) is not type(self):
            return NotImplemented
        return self.href == other.href

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.href))


@dataclass(frozen=True)
class Requirements:
    """
    What an agent needs to take a job's tasks. Also accepted by
    C{Client.submit} and C{Job.update} in place of a dict.
    """

    cpus: int = 0
    ram_mb: int = 0
    gpus: int = 0
    tags: tuple[str, ...] = ()
    #: The memory each of the task's GPUs must have, MB (0: any).
    gpu_memory_mb: int = 0

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> Requirements:
        raw = raw or {}
        return cls(
            cpus=int(raw.get("cpus") or 0),
            ram_mb=int(raw.get("ram_mb") or 0),
            gpus=int(raw.get("gpus") or 0),
            tags=tuple(raw.get("tags") or ()),
            gpu_memory_mb=int(raw.get("gpu_memory_mb") or 0),
        )

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "cpus": self.cpus,
            "ram_mb": self.ram_mb,
            "gpus": self.gpus,
            "tags": list(self.tags),
        }
        # Only when asked for: a master from before GPU placement refuses
        # a field it does not know.
        if self.gpu_memory_mb:
            document["gpu_memory_mb"] = self.gpu_memory_mb
        return document


@dataclass(frozen=True)
class TaskCounts:
    """
    How many of a job's tasks are in each state (kept by the database, so
    reading them costs nothing).
    """

    total: int = 0
    waiting: int = 0
    queued: int = 0
    assigned: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    canceled: int = 0

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> TaskCounts:
        raw = raw or {}
        names = ("total", "waiting", "queued", "assigned", "running", "done", "failed", "canceled")
        return cls(**{name: int(raw.get(name) or 0) for name in names})

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.canceled


@dataclass(frozen=True)
class LogChunk:
    """
    A piece of an attempt's log: C{text} is its lines, each ending in a
    newline; C{next_after} is the line number to ask after for the
    following piece.
    """

    text: str
    attempt: int
    next_after: int

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()


def requirements_json(value: Requirements | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, Requirements):
        return value.to_json()
    return dict(value)
