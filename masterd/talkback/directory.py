"""
Agents as the HTTP API shows and steers them (the seed's "Agent
Information"): read from the database, so any master answers for any agent.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg2.extras import Json

from masterd._time import isoformat, isotime
from masterd.audit import Actor, record
from masterd.db import Pool, Transaction
from masterd.errors import Conflict, NoSuchResource
from masterd.events import AgentChanged, EventBus
from masterd.jobs.logs import packedLines
from masterd.jobs.models import AttemptDocument
from masterd.jobs.views import ATTEMPT_COLUMNS, attemptColumns, attemptDocument, jobRef

from .models import (
    AgentDocument,
    AgentExceptionDocument,
    AgentJob,
    AgentLimits,
    AgentPatch,
    GpuDeviceDocument,
    Limits,
    OperatorLimits,
)

AGENT_STATES = ("idle", "busy", "offline", "disabled")
LIMIT_KEYS = ("max_tasks", "max_ram_mb", "max_cpus")

_COLUMNS = (
    "a.id, a.hostname, a.os, a.version, a.cpus, a.ram_mb, a.gpus, a.tags, a.extra_tags,"
    " a.software, a.max_tasks, a.agent_limits, a.operator_limits, a.enabled, a.master,"
    " a.connected_at, a.disconnected_at, a.last_seen, a.usage, a.created_at, a.enrolled_at,"
    " s.state, a.gpu_devices, a.os_family, a.cpu_arch, a.attributes, a.amounts"
)
_STATE = (
    " CROSS JOIN LATERAL (SELECT CASE WHEN NOT a.enabled THEN 'disabled'"
    " WHEN a.session IS NULL THEN 'offline'"
    " WHEN EXISTS (SELECT 1 FROM tasks t WHERE t.agent_id = a.id"
    " AND t.state IN ('assigned', 'running')) THEN 'busy' ELSE 'idle' END AS state) s"
)


def agentHref(agentID: Any) -> str:
    return f"/api/v1/agents/{agentID}"


def effectiveLimits(
    cpus: int, ramMB: int, maxTasks: int, agent: dict[str, Any], operator: dict[str, Any]
) -> dict[str, int]:
    """
    The lower of what the agent has, what it allows, and what an operator set.
    """

    def lowest(*values: Any) -> int:
        return min(v for v in values if isinstance(v, int) and v > 0)

    return {
        "max_tasks": lowest(maxTasks, agent.get("max_tasks"), operator.get("max_tasks")),
        "max_ram_mb": lowest(
            ramMB or 2**31 - 1, agent.get("max_ram_mb"), operator.get("max_ram_mb")
        ),
        "max_cpus": lowest(cpus or 2**31 - 1, agent.get("max_cpus"), operator.get("max_cpus")),
    }


def agentDocument(row: tuple[Any, ...]) -> AgentDocument:
    (agentID, hostname, os, version, cpus, ramMB, gpus, tags, extraTags, software, maxTasks,
     agentLimits, operatorLimits, enabled, master, connectedAt, disconnectedAt, lastSeen, usage,
     createdAt, enrolledAt, state, gpuDevices, osFamily, cpuArch, attributes,
     amounts) = row  # fmt: skip
    href = agentHref(agentID)
    return AgentDocument(
        id=str(agentID),
        href=href,
        hostname=hostname,
        state=state,
        enabled=enabled,
        master=master,
        connected_at=isoformat(connectedAt),
        disconnected_at=isoformat(disconnectedAt),
        last_seen=isoformat(lastSeen),
        created_at=isotime(createdAt),
        enrolled_at=isoformat(enrolledAt),
        os=os,
        version=version,
        cpus=cpus,
        ram_mb=ramMB,
        gpus=gpus,
        gpu_devices=gpuDocuments(gpus, gpuDevices),
        tags=sorted(set(tags) | set(extraTags)),
        agent_tags=list(tags),
        operator_tags=list(extraTags),
        software=software,
        os_family=osFamily,
        cpu_arch=cpuArch,
        attributes=attributes,
        amounts=amounts,
        limits=Limits(**effectiveLimits(cpus, ramMB, maxTasks, agentLimits, operatorLimits)),
        agent_limits=AgentLimits(**{"max_tasks": maxTasks, **_known(agentLimits)}),
        operator_limits=OperatorLimits(**_known(operatorLimits)),
        usage=usage,
        tasks=f"{href}/tasks",
        failures=f"{href}/failures",
        jobs=f"{href}/jobs",
        exceptions=f"{href}/exceptions",
    )


def gpuDocuments(gpus: int, reported: list[dict[str, Any]] | None) -> list[GpuDeviceDocument]:
    """
    The GPUs an agent reported; an agent that gave only their number has
    that many, numbered from 0, of unknown name and memory (as
    L{masterd.scheduler.service.agentDevices} hands them out).
    """
    if reported:
        return [
            GpuDeviceDocument(
                index=int(d["index"]), name=str(d.get("name") or ""),
                memory_mb=int(d.get("memory_mb") or 0),
            )
            for d in sorted(reported, key=lambda d: int(d["index"]))
        ]  # fmt: skip
    return [GpuDeviceDocument(index=i, name="", memory_mb=0) for i in range(gpus)]


def _known(limits: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in limits.items() if k in LIMIT_KEYS and isinstance(v, int)}


def agentChanges(patch: AgentPatch) -> dict[str, Any]:
    """
    The changes of a C{PATCH /api/v1/agents/<id>}: only the fields given.
    """
    changes: dict[str, Any] = {}
    if patch.enabled is not msgspec.UNSET:
        changes["enabled"] = patch.enabled
    if patch.tags is not msgspec.UNSET:
        changes["tags"] = sorted(set(patch.tags))
    if patch.limits is not msgspec.UNSET:
        changes["limits"] = {
            name: getattr(patch.limits, name)
            for name in LIMIT_KEYS
            if getattr(patch.limits, name) is not msgspec.UNSET
        }
    return changes


class AgentDirectory:
    def __init__(self, pool: Pool, events: EventBus) -> None:
        self._pool = pool
        self._events = events

    async def _get(self, txn: Transaction, agentID: str) -> AgentDocument:
        rows = await txn.query(f"SELECT {_COLUMNS} FROM agents a {_STATE} WHERE a.id = %s",
                               (agentID,))  # fmt: skip
        if not rows:
            raise NoSuchResource("agent", agentID)
        return agentDocument(rows[0])

    async def get(self, agentID: str) -> AgentDocument:
        return await self._pool.transaction(lambda txn: self._get(txn, agentID))

    async def listAgents(
        self, *, state: str | None, tag: str | None, limit: int, after: str | None
    ) -> tuple[list[AgentDocument], bool]:
        where: list[str] = ["TRUE"]
        params: list[Any] = []
        if state is not None:
            where.append("s.state = %s")
            params.append(state)
        if tag is not None:
            where.append("(%s = ANY (a.tags) OR %s = ANY (a.extra_tags))")
            params += [tag, tag]
        if after is not None:
            where.append("a.id > %s")
            params.append(after)
        params.append(limit + 1)
        rows = await self._pool.query(
            f"SELECT {_COLUMNS} FROM agents a {_STATE} WHERE {' AND '.join(where)}"
            " ORDER BY a.id LIMIT %s",
            params,
        )
        return [agentDocument(r) for r in rows[:limit]], len(rows) > limit

    async def patch(
        self, agentID: str, changes: dict[str, Any], actor: Actor | None = None
    ) -> AgentDocument:
        async def work(txn: Transaction) -> AgentDocument:
            current = await self._get(txn, agentID)
            if not changes:
                # An empty PATCH changes nothing and says so.
                return current
            sets: list[str] = []
            params: list[Any] = []
            if "enabled" in changes:
                sets.append("enabled = %s")
                params.append(changes["enabled"])
            if "tags" in changes:
                sets.append("extra_tags = %s")
                params.append(changes["tags"])
            if "limits" in changes:
                merged = msgspec.to_builtins(current.operator_limits)
                for name, value in changes["limits"].items():
                    if value is None:
                        merged.pop(name, None)
                    else:
                        merged[name] = value
                sets.append("operator_limits = %s")
                params.append(Json(merged))
            await txn.execute(
                f"UPDATE agents SET {', '.join(sets)} WHERE id = %s", (*params, agentID)
            )
            document = await self._get(txn, agentID)
            limits = msgspec.to_builtins(document.operator_limits) if "limits" in changes else None
            await self._events.announce(txn, AgentChanged(agentID, limits))
            # One row a request: named for what it did when it did one thing.
            said: dict[str, Any] = {}
            actions = []
            if "enabled" in changes:
                said["enabled"] = changes["enabled"]
                actions.append("agent.enable" if changes["enabled"] else "agent.disable")
            if "limits" in changes:
                said["limits"] = changes["limits"]
                actions.append("agent.limits")
            if "tags" in changes:
                said["tags"] = list(changes["tags"])
                actions.append("agent.tags")
            action = actions[0] if len(actions) == 1 else "agent.patch"
            record(txn, actor, action, f"/api/v1/agents/{agentID}", said)
            return document

        return await self._pool.transaction(work)

    async def delete(self, agentID: str, actor: Actor | None = None) -> None:
        async def work(txn: Transaction) -> None:
            rows = await txn.query(
                "DELETE FROM agents WHERE id = %s AND session IS NULL RETURNING id", (agentID,)
            )
            if not rows:
                current = await self._get(txn, agentID)
                raise Conflict(
                    f"agent {agentID} is connected to {current.master}; only offline"
                    " agents can be deleted",
                    state=current.state,
                )
            record(txn, actor, "agent.delete", f"/api/v1/agents/{agentID}")

        await self._pool.transaction(work)

    async def resetCredential(self, agentID: str, actor: Actor | None = None) -> AgentDocument:
        """
        Forget the agent's credential, so that the next hello for its id
        with an agent token enrolls it again (a reinstalled host). A
        connection open now is left alone: it has said hello already.
        """

        async def work(txn: Transaction) -> AgentDocument:
            rows = await txn.query(
                "UPDATE agents SET credential_sha256 = NULL, enrolled_at = NULL WHERE id = %s"
                " RETURNING id",
                (agentID,),
            )
            if not rows:
                raise NoSuchResource("agent", agentID)
            record(txn, actor, "agent.credential_reset", agentHref(agentID))
            return await self._get(txn, agentID)

        return await self._pool.transaction(work)

    async def _exists(self, txn: Transaction, agentID: str) -> None:
        if not await txn.query("SELECT 1 FROM agents WHERE id = %s", (agentID,)):
            raise NoSuchResource("agent", agentID)

    async def failures(
        self, agentID: str, limit: int, after: tuple[int, int] | None = None
    ) -> tuple[list[AttemptDocument], bool]:
        """
        Its failed attempts, newest first, a page of C{limit} after the
        attempt C{after} (task id, attempt); whether more follow.
        """

        async def work(txn: Transaction) -> list[AttemptDocument]:
            await self._exists(txn, agentID)
            cursor: tuple[Any, ...] | None = None
            if after is not None:
                # The attempt the page follows, live or of a deleted job.
                found = await txn.query(
                    "SELECT finished_at, task_id, attempt FROM task_attempts"
                    " WHERE task_id = %(t)s AND attempt = %(n)s UNION ALL"
                    " SELECT finished_at, task_id, attempt FROM agent_failure_history"
                    " WHERE task_id = %(t)s AND attempt = %(n)s",
                    {"t": after[0], "n": after[1]},
                )
                cursor = tuple(found[0]) if found else (None, after[0], after[1])
            # Its failed attempts, and those of its jobs deleted since
            # (migration 0022), each side read by its index up to a page.
            where = (
                ""
                if cursor is None
                else " AND (finished_at, task_id, attempt) < (%(f)s, %(t)s, %(n)s)"
            )
            order = " ORDER BY finished_at DESC, task_id DESC, attempt DESC LIMIT %(limit)s"
            rows = await txn.query(
                f"SELECT * FROM ((SELECT {ATTEMPT_COLUMNS}, (SELECT j.title FROM jobs j"
                " WHERE j.id = task_attempts.job_id) FROM task_attempts"
                f" WHERE agent_id = %(agent)s AND state = 'failed'{where}{order})"
                f" UNION ALL (SELECT {attemptColumns('agent_failure_history')}, title"
                f" FROM agent_failure_history WHERE agent_id = %(agent)s{where}{order})) x"
                " ORDER BY finished_at DESC, task_id DESC, attempt DESC LIMIT %(limit)s",
                {"agent": agentID, "f": cursor[0] if cursor else None,
                 "t": cursor[1] if cursor else None, "n": cursor[2] if cursor else None,
                 "limit": limit + 1},
            )  # fmt: skip
            return [attemptDocument(r) for r in rows]

        return _page(await self._pool.transaction(work), limit)

    async def jobs(
        self, agentID: str, limit: int, after: int | None = None
    ) -> tuple[list[AgentJob], bool]:
        """
        The jobs it worked on, the latest first, a page of C{limit} after
        job C{after}; whether more follow.
        """

        async def work(txn: Transaction) -> list[AgentJob]:
            await self._exists(txn, agentID)
            # Its jobs from their attempts, and what was kept of those
            # deleted since (migration 0022).
            rows = await txn.query(
                "WITH x AS (SELECT job_id, count(*) AS n, count(*) FILTER (WHERE state = 'done')"
                " AS d, count(*) FILTER (WHERE state = 'failed') AS f, max(started_at) AS last,"
                " (SELECT j.title FROM jobs j WHERE j.id = a.job_id) AS title, false AS deleted"
                " FROM task_attempts a WHERE agent_id = %(agent)s GROUP BY job_id"
                " UNION ALL SELECT job_id, attempts, done, failed, last_started_at, title, true"
                " FROM agent_job_history WHERE agent_id = %(agent)s)"
                " SELECT job_id, n, d, f, last, title, deleted FROM x"
                " WHERE %(after)s::bigint IS NULL OR (last, job_id) <"
                " (SELECT last, job_id FROM x WHERE job_id = %(after)s LIMIT 1)"
                " ORDER BY last DESC NULLS LAST, job_id DESC LIMIT %(limit)s",
                {"agent": agentID, "after": after, "limit": limit + 1},
            )
            return [
                AgentJob(job=jobRef(j), attempts=n, done=d, failed=f,
                         last_started_at=isoformat(last), title=title, deleted=deleted)
                for j, n, d, f, last, title, deleted in rows
            ]  # fmt: skip

        return _page(await self._pool.transaction(work), limit)

    async def exceptions(self, agentID: str, limit: int) -> list[AgentExceptionDocument]:
        async def work(txn: Transaction) -> list[AgentExceptionDocument]:
            await self._exists(txn, agentID)
            rows = await txn.query(
                "SELECT at, message, traceback FROM agent_exceptions WHERE agent_id = %s"
                " ORDER BY id DESC LIMIT %s",
                (agentID, limit),
            )
            return [
                AgentExceptionDocument(at=isotime(at), message=message, traceback=tb)
                for at, message, tb in rows
            ]

        return await self._pool.transaction(work)

    async def taskLog(self, taskID: int, attempt: int | None, after: int) -> tuple[int, list[str]]:
        """
        The lines of an attempt's log after line number C{after} (lines are
        numbered from 1); the attempt defaults to the task's current one.
        """

        async def work(txn: Transaction) -> tuple[int, list[str]]:
            rows = await txn.query("SELECT attempt FROM tasks WHERE id = %s", (taskID,))
            if not rows:
                raise NoSuchResource("task", taskID)
            chosen = rows[0][0] if attempt is None else attempt
            chunks = await txn.query(
                "SELECT first_line, lines FROM task_logs WHERE task_id = %s AND attempt = %s"
                " AND first_line + cardinality(lines) > %s ORDER BY first_line",
                (taskID, chosen, after),
            )
            lines: list[str] = []
            for first, chunk in chunks:
                lines.extend(chunk[max(0, after - first) :])
            if not chunks:
                # An ended attempt's log may be compressed (migration 0022).
                lines = await packedLines(txn, taskID, chosen, after)
            return chosen, lines

        return await self._pool.transaction(work)


def _page(items: list[Any], limit: int) -> tuple[list[Any], bool]:
    """
    A page of at most C{limit} items from C{limit} + 1 fetched, and whether
    more follow.
    """
    return items[:limit], len(items) > limit
