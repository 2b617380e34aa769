"""
Task logs at rest: an attempt's lines arrive as rows of C{task_logs} (one a
log message, numbered from 0 by line); once the attempt has ended they may
be compressed into one row of C{task_logs_packed} (their lines as one
zlib-compressed JSON array, migration 0022), which is read back the same.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

from masterd.db import Transaction

#: zlib's level: 6 (its default) packs log text about as well as 9, faster.
LEVEL = 6


def pack(lines: Sequence[str]) -> bytes:
    """
    Lines as one compressed value (JSON keeps every line exactly, whatever
    it holds).
    """
    return zlib.compress(json.dumps(list(lines), ensure_ascii=False).encode("utf-8"), LEVEL)


def unpack(data: bytes) -> list[str]:
    lines: Any = json.loads(zlib.decompress(data).decode("utf-8"))
    return [str(line) for line in lines]


async def packedLines(txn: Transaction, taskID: int, attempt: int, after: int) -> list[str]:
    """
    The lines after line C{after} of an attempt's compressed log; none when
    it has none.
    """
    rows = await txn.query(
        "SELECT line_count, data FROM task_logs_packed WHERE task_id = %s AND attempt = %s",
        (taskID, attempt),
    )
    if not rows or rows[0][0] <= after:
        return []
    return unpack(bytes(rows[0][1]))[after:]


async def attemptLog(txn: Transaction, taskID: int, attempt: int) -> list[str]:
    """
    Every line of an attempt's log, compressed or not.
    """
    chunks = await txn.query(
        "SELECT lines FROM task_logs WHERE task_id = %s AND attempt = %s ORDER BY first_line",
        (taskID, attempt),
    )
    if chunks:
        return [line for (chunk,) in chunks for line in chunk]
    return await packedLines(txn, taskID, attempt, 0)


async def packAttempts(txn: Transaction, attempts: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """
    Compress the logs of ended attempts, (task id, attempt) pairs: their
    rows of task_logs become one row of task_logs_packed each. Returns the
    bytes of text read and the bytes written.
    """
    if not attempts:
        return 0, 0
    rows = await txn.query(
        "SELECT task_id, attempt, lines FROM task_logs"
        " WHERE (task_id, attempt) IN (SELECT * FROM unnest(%s::bigint[], %s::int[]))"
        " ORDER BY task_id, attempt, first_line FOR UPDATE",
        ([a[0] for a in attempts], [a[1] for a in attempts]),
    )
    logs: dict[tuple[int, int], list[str]] = {}
    for taskID, attempt, lines in rows:
        logs.setdefault((taskID, attempt), []).extend(lines)
    if not logs:
        return 0, 0
    keys = sorted(logs)
    packed = [pack(logs[k]) for k in keys]
    await txn.execute(
        "INSERT INTO task_logs_packed (task_id, attempt, line_count, data)"
        " SELECT * FROM unnest(%s::bigint[], %s::int[], %s::int[], %s::bytea[])"
        " ON CONFLICT (task_id, attempt) DO NOTHING",
        ([k[0] for k in keys], [k[1] for k in keys], [len(logs[k]) for k in keys], packed),
    )
    await txn.execute(
        "DELETE FROM task_logs"
        " WHERE (task_id, attempt) IN (SELECT * FROM unnest(%s::bigint[], %s::int[]))",
        ([k[0] for k in keys], [k[1] for k in keys]),
    )
    read = sum(len(line.encode("utf-8")) + 1 for k in keys for line in logs[k])
    return read, sum(len(p) for p in packed)
