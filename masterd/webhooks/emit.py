"""
Events recorded from the master's code, in the transaction of the change
that causes them (the job and task events come from triggers: migration
0010). Each is one statement that writes nothing, at the cost of a look at
the webhooks table, when no enabled webhook wants its kind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from masterd.db import Transaction


async def agentsLost(
    txn: Transaction, agents: list[str], requeued: list[tuple[str, int, int]]
) -> None:
    """
    C{agent.lost}: C{agents} stayed offline longer than the lost grace (each
    said once a disconnection); C{requeued} are the tasks (agent id, task
    id, attempt) just taken back from them: one event per agent, listing
    its tasks (none for an idle one).
    """
    if not agents:
        return
    await txn.execute(
        "SELECT masterd_webhook_event('agent.lost', jsonb_build_object('agent',"
        " jsonb_build_object('id', a.id, 'href', '/api/v1/agents/' || a.id,"
        " 'hostname', a.hostname), 'requeued', coalesce(x.tasks, '[]'::jsonb)))"
        " FROM agents a LEFT JOIN (SELECT u.agent_id, jsonb_agg(jsonb_build_object("
        " 'id', u.task_id, 'href', '/api/v1/tasks/' || u.task_id, 'attempt', u.attempt)"
        " ORDER BY u.task_id) AS tasks FROM unnest(%s::uuid[], %s::bigint[], %s::int[])"
        " AS u (agent_id, task_id, attempt) GROUP BY u.agent_id) x ON x.agent_id = a.id"
        " WHERE a.id = ANY (%s::uuid[]) AND masterd_webhook_wanted('agent.lost')"
        " ORDER BY a.id",
        ([a for a, _, _ in requeued], [t for _, t, _ in requeued],
         [n for _, _, n in requeued], agents),
    )  # fmt: skip


async def agentException(
    txn: Transaction, agentID: str, message: str, traceback: str | None
) -> None:
    """
    C{agent.exception}: an agent reported an exception of its own.
    """
    await txn.execute(
        "SELECT masterd_webhook_event('agent.exception', jsonb_build_object('agent',"
        " jsonb_build_object('id', a.id, 'href', '/api/v1/agents/' || a.id,"
        " 'hostname', a.hostname), 'exception', jsonb_build_object('message', %s::text,"
        " 'traceback', %s::text)))"
        " FROM agents a WHERE a.id = %s AND masterd_webhook_wanted('agent.exception')",
        (message, traceback, agentID),
    )


async def mastersDown(txn: Transaction, cutoff: datetime, master: str) -> list[tuple[Any, ...]]:
    """
    C{master.down}: masters (other than C{master}) whose heartbeat is older
    than C{cutoff}, said once for each death (C{masters.down_at}), by the
    one master holding the expiry lock. Returns (name, last seen, event id
    or None) of each.
    """
    return await txn.query(
        "WITH down AS (UPDATE masters SET down_at = now() WHERE last_seen < %s AND name <> %s"
        " AND (down_at IS NULL OR down_at < last_seen) RETURNING name, last_seen)"
        " SELECT name, last_seen, masterd_webhook_event('master.down', jsonb_build_object("
        " 'master', jsonb_build_object('name', name, 'href', '/api/v1/masters/' || name,"
        " 'last_seen', to_char(last_seen AT TIME ZONE 'UTC',"
        ' \'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\'))), %s) FROM down ORDER BY name',
        (cutoff, master, master),
    )
