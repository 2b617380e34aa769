"""
Agents (render nodes) and the master itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._base import Record, Resource, iterate_pages, list_items, ref_href, ref_id
from ._jobs import Attempt, Job, Task

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's since 3.11


class Agent(Resource):
    """
    A render node, as the master knows it.
    """

    @property
    def id(self) -> str:
        return str(self.raw["id"])

    @property
    def hostname(self) -> str:
        return str(self.raw.get("hostname"))

    @property
    def state(self) -> str:
        """
        C{idle}, C{busy}, C{offline} or C{disabled}.
        """
        return str(self.raw["state"])

    @property
    def enabled(self) -> bool:
        return bool(self.raw.get("enabled"))

    @property
    def master(self) -> str | None:
        """
        The master holding its talkback connection, if connected.
        """
        return self.raw.get("master")

    @property
    def connected_at(self) -> datetime | None:
        return self._time("connected_at")

    @property
    def disconnected_at(self) -> datetime | None:
        return self._time("disconnected_at")

    @property
    def last_seen(self) -> datetime | None:
        return self._time("last_seen")

    @property
    def created_at(self) -> datetime | None:
        return self._time("created_at")

    @property
    def os(self) -> str | None:
        return self.raw.get("os")

    @property
    def version(self) -> str | None:
        return self.raw.get("version")

    @property
    def cpus(self) -> int:
        return int(self.raw.get("cpus") or 0)

    @property
    def ram_mb(self) -> int:
        return int(self.raw.get("ram_mb") or 0)

    @property
    def gpus(self) -> int:
        return int(self.raw.get("gpus") or 0)

    @property
    def gpu_devices(self) -> list[dict[str, Any]]:
        """
        Its GPUs: C{{"index", "name", "memory_mb"}} each (memory 0: not known).
        """
        return [dict(d) for d in self.raw.get("gpu_devices") or []]

    @property
    def tags(self) -> list[str]:
        """
        The agent's own tags and the operator's, together.
        """
        return list(self.raw.get("tags") or [])

    @property
    def agent_tags(self) -> list[str]:
        return list(self.raw.get("agent_tags") or [])

    @property
    def operator_tags(self) -> list[str]:
        return list(self.raw.get("operator_tags") or [])

    @property
    def software(self) -> dict[str, str]:
        return dict(self.raw.get("software") or {})

    @property
    def limits(self) -> dict[str, int]:
        """
        The limits in force: the lowest of the hardware's, the agent's and
        the operator's.
        """
        return dict(self.raw.get("limits") or {})

    @property
    def agent_limits(self) -> dict[str, int]:
        return dict(self.raw.get("agent_limits") or {})

    @property
    def operator_limits(self) -> dict[str, int]:
        return dict(self.raw.get("operator_limits") or {})

    @property
    def usage(self) -> dict[str, Any]:
        """
        Its last reported usage (C{cpu_percent}, C{ram_free_mb}, ...).
        """
        return dict(self.raw.get("usage") or {})

    def current_tasks(self) -> list[Task]:
        """
        The tasks assigned to it or running on it now.
        """
        href = self.raw.get("tasks") or f"{self.href}/tasks"
        return [Task(self._transport, raw) for raw in list_items(self._transport, href)]

    def failures(self, limit: int | None = None) -> list[Attempt]:
        """
        Its latest failed attempts, newest first (one page of C{limit}; see
        L{all_failures} for every one).
        """
        href = self.raw.get("failures") or f"{self.href}/failures"
        items = list_items(self._transport, href, {"limit": limit})
        return [Attempt(self._transport, raw) for raw in items]

    def all_failures(self, page_size: int = 100) -> Iterator[Attempt]:
        """
        Every failed attempt of the agent, newest first, page after page as
        the iteration reaches them.
        """
        href = self.raw.get("failures") or f"{self.href}/failures"
        return iterate_pages(self._transport, href, {"limit": page_size},
                             lambda raw: Attempt(self._transport, raw))  # fmt: skip

    def jobs(self, limit: int | None = None) -> list[AgentJob]:
        """
        The jobs it worked on, latest first, with its attempts on each (one
        page of C{limit}; see L{all_jobs} for every one).
        """
        href = self.raw.get("jobs") or f"{self.href}/jobs"
        items = list_items(self._transport, href, {"limit": limit})
        return [AgentJob(self._transport, raw) for raw in items]

    def all_jobs(self, page_size: int = 100) -> Iterator[AgentJob]:
        """
        Every job it worked on, latest first, page after page.
        """
        href = self.raw.get("jobs") or f"{self.href}/jobs"
        return iterate_pages(self._transport, href, {"limit": page_size},
                             lambda raw: AgentJob(self._transport, raw))  # fmt: skip

    def exceptions(self, limit: int | None = None) -> list[AgentException]:
        """
        The latest unhandled exceptions the agent itself reported.
        """
        href = self.raw.get("exceptions") or f"{self.href}/exceptions"
        items = list_items(self._transport, href, {"limit": limit})
        return [AgentException(self._transport, raw) for raw in items]

    def disable(self) -> Self:
        """
        Hand it no new tasks (its running tasks carry on).
        """
        return self.update(enabled=False)

    def enable(self) -> Self:
        return self.update(enabled=True)

    def update(
        self,
        *,
        limits: Mapping[str, int | None] | None = None,
        tags: Sequence[str] | None = None,
        enabled: bool | None = None,
    ) -> Self:
        """
        Change the operator's settings: C{limits} (C{max_tasks},
        C{max_ram_mb}, C{max_cpus}; C{None} removes one, keys not given are
        kept), C{tags} (replaces the operator's tags), C{enabled}.
        """
        body: dict[str, Any] = {}
        if limits is not None:
            body["limits"] = dict(limits)
        if tags is not None:
            body["tags"] = list(tags)
        if enabled is not None:
            body["enabled"] = enabled
        return self._update(self._transport.send_json("PATCH", self.href, body))

    def reset_credential(self) -> Self:
        """
        Forget its per-agent secret (role admin), so that a reinstalled
        host can enroll again under the same id with an enrollment token.
        """
        href = f"{self.href}/credential/reset"
        return self._update(self._transport.send_json("POST", href))

    def delete(self) -> None:
        """
        Forget an offline agent (role admin; 409 while it is connected).
        """
        self._transport.request("DELETE", self.href)

    def __repr__(self) -> str:
        return f"<Agent {self.raw.get('id')} {self.raw.get('hostname')!r} {self.raw.get('state')}>"


class AgentJob(Record):
    """
    A job an agent worked on, and how its attempts went there.
    """

    @property
    def job_id(self) -> int:
        return int(ref_id(self.raw.get("job")))

    @property
    def attempts(self) -> int:
        return int(self.raw.get("attempts") or 0)

    @property
    def done(self) -> int:
        return int(self.raw.get("done") or 0)

    @property
    def failed(self) -> int:
        return int(self.raw.get("failed") or 0)

    @property
    def last_started_at(self) -> datetime | None:
        return self._time("last_started_at")

    def job(self) -> Job:
        return Job(self._transport, self._transport.get_json(ref_href(self.raw.get("job"), "job")))


class AgentException(Record):
    """
    An unhandled exception an agent reported about itself.
    """

    @property
    def at(self) -> datetime | None:
        return self._time("at")

    @property
    def message(self) -> str:
        return str(self.raw.get("message") or "")

    @property
    def traceback(self) -> str | None:
        return self.raw.get("traceback")


class Master(Resource):
    """
    The master answering, and its counters since it started.
    """

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def version(self) -> str:
        return str(self.raw.get("version"))

    @property
    def started_at(self) -> datetime | None:
        return self._time("started_at")

    @property
    def uptime_s(self) -> float:
        return float(self.raw.get("uptime_s") or 0.0)

    @property
    def requests(self) -> dict[str, Any]:
        """
        C{total}, C{in_flight}, C{avg_ms}, C{max_ms}, C{by_route}.
        """
        return dict(self.raw.get("requests") or {})

    @property
    def exceptions(self) -> dict[str, Any]:
        """
        C{total} and the C{recent} ones (C{at} stays a string here).
        """
        return dict(self.raw.get("exceptions") or {})

    @property
    def database(self) -> dict[str, Any]:
        return dict(self.raw.get("database") or {})

    @property
    def talkback(self) -> dict[str, Any] | None:
        """
        The agents' channel counters; None on a master without talkback.
        """
        talkback = self.raw.get("talkback")
        return dict(talkback) if talkback is not None else None

    def __repr__(self) -> str:
        return f"<Master {self.raw.get('name')!r} {self.raw.get('version')}>"
