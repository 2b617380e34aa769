"""
Adaptive chunk sizing: OpenJD's TASK_CHUNKING extension lets a step's
CHUNK[INT] parameter set C{chunks.targetRuntimeSeconds}, the time each chunk
should take. masterd submits such a layer's chunks at C{defaultTaskCount}
values, and resizes each chunk as the scheduler claims it (inside the claim's
transaction, before the assignment is made), from the runtimes of the
layer's finished chunks:

    - the time a value takes is the median, over the layer's last
      L{SAMPLE} finished chunks (the done tasks of highest index), of each
      chunk's runtime (running to done) divided by its number of values;
    - the chunk's size is the target divided by that time, rounded, at
      least 1 and at most L{MAX_VALUES};
    - a larger chunk gives its surplus values to a new task, which takes
      the index of its first value and is queued at once (a split);
    - a smaller chunk takes values from the queued tasks that follow it in
      the layer, in order, while they are of the same combination of the
      other parameters (and, for CONTIGUOUS chunks, follow on without a
      gap); a task whose every value is taken is deleted, one that gives
      some keeps the rest under the index of its new first value.

Only a chunk's first attempt is resized: a retried chunk keeps the values its
earlier attempts ran. No chunk is resized before one of its layer has
finished, nor in a layer that another layer or job depends on frame by frame
(or that depends so itself): its tasks' edges are made from their frames.
docs/jobs.md, "Adaptive chunks", says the same for users.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from attrs import frozen
from psycopg2.extras import Json

from masterd.db import Transaction

#: How many of a layer's finished chunks its per-value time is taken from.
SAMPLE = 20
#: The most values one chunk is grown to.
MAX_VALUES = 10_000
#: The most following tasks one claim takes values from (bounds the rows one
#: claim locks; a chunk far below its target grows over several claims).
MAX_ABSORBED = 100

# The claimed tasks that may be resized, with their layer's chunking and the
# runtimes per value of its last finished chunks.
_SIZED = (
    "WITH c AS (SELECT id, layer_id, job_id, index, frames, parameters FROM tasks"
    " WHERE id = ANY (%s::bigint[]) AND state = 'queued' AND attempt = 0),"
    " s AS (SELECT l.id, l.chunk_target_s, l.openjd->'chunks' AS chunks,"
    " ARRAY(SELECT extract(epoch FROM d.finished_at - d.started_at)::float8"
    " / cardinality(d.frames) FROM tasks d WHERE d.job_id = l.job_id AND d.state = 'done'"
    " AND d.layer_id = l.id AND d.started_at IS NOT NULL AND cardinality(d.frames) > 0"
    " ORDER BY d.index DESC LIMIT %s) AS per_value"
    " FROM layers l WHERE l.id IN (SELECT layer_id FROM c) AND l.chunk_target_s IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM layer_dependencies x WHERE x.mode = 'frame'"
    " AND (x.child = l.id OR x.parent_layer = l.id OR x.parent_job = l.job_id)))"
    " SELECT c.id, c.layer_id, c.job_id, c.index, c.frames, c.parameters, s.chunk_target_s,"
    " s.chunks, s.per_value FROM c JOIN s ON s.id = c.layer_id ORDER BY c.id"
)

# The queued first attempts that follow a chunk, by index, that it may take
# values from; those this claim holds itself (to hand out) are left to it.
_FOLLOWING = (
    "SELECT id, index, frames, parameters FROM tasks WHERE layer_id = %s AND state = 'queued'"
    " AND attempt = 0 AND index >= %s AND index < %s AND id <> ALL (%s::bigint[])"
    " ORDER BY index LIMIT %s FOR UPDATE SKIP LOCKED"
)


@frozen
class _Chunk:
    task_id: int
    layer_id: int
    job_id: int
    index: int
    frames: tuple[int, ...]
    parameters: dict[str, Any]
    parameter: str
    contiguous: bool


def chunkSize(target: float, perValue: Sequence[float]) -> int | None:
    """
    The number of values a chunk should have to take C{target} seconds,
    from the times per value of finished chunks; None before any finished.
    """
    if not perValue:
        return None
    per = statistics.median(perValue)
    if per <= 0:
        return MAX_VALUES
    return max(1, min(MAX_VALUES, round(target / per)))


def chunkValue(frames: Sequence[int], contiguous: bool) -> str:
    """
    A chunk's value, the range expression its script sees: C{a-b} for a
    contiguous chunk (as openjd-model writes one, C{7-7} for one value);
    runs joined by commas otherwise.
    """
    if contiguous:
        return f"{frames[0]}-{frames[-1]}"
    parts: list[str] = []
    i = 0
    while i < len(frames):
        j = i
        while j + 1 < len(frames) and frames[j + 1] == frames[j] + 1:
            j += 1
        parts.append(str(frames[i]) if i == j else f"{frames[i]}-{frames[j]}")
        i = j + 1
    return ",".join(parts)


def _withValue(chunk: _Chunk, frames: Sequence[int]) -> dict[str, Any]:
    parameters = dict(chunk.parameters)
    value = chunkValue(frames, chunk.contiguous)
    parameters[chunk.parameter] = {"type": "CHUNK[INT]", "value": value}
    return parameters


def _others(parameters: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in parameters.items() if k != name}


async def sizeChunks(txn: Transaction, taskIDs: Sequence[int], held: Sequence[int]) -> int:
    """
    Resize the claimed (locked, still queued) tasks among C{taskIDs} whose
    layers size their chunks; C{held} are every task the claim holds. Returns
    how many were resized.
    """
    if not taskIDs:
        return 0
    rows = await txn.query(_SIZED, (list(taskIDs), SAMPLE))
    splits: list[tuple[_Chunk, int]] = []
    resized = 0
    for taskID, layerID, jobID, index, frames, parameters, target, chunks, perValue in rows:
        size = chunkSize(float(target), [float(p) for p in perValue or ()])
        if size is None or not frames or parameters is None:
            continue
        chunk = _Chunk(
            taskID, layerID, jobID, index, tuple(frames), parameters,
            chunks["parameter"], bool(chunks.get("contiguous")),
        )  # fmt: skip
        if size < len(chunk.frames):
            splits.append((chunk, size))
        elif size > len(chunk.frames) and await _grow(txn, chunk, size, held):
            resized += 1
    if splits:
        await _split(txn, splits)
    return resized + len(splits)


async def _split(txn: Transaction, splits: list[tuple[_Chunk, int]]) -> None:
    """
    Each chunk keeps its first C{size} values; the rest become a new queued
    task at the index of their first value (migration 0019).
    """
    await txn.execute(
        "INSERT INTO tasks (job_id, layer_id, index, frames, wait_count, state, parameters)"
        " SELECT u.j, u.l, u.i, ARRAY(SELECT jsonb_array_elements_text(u.f)::int), 0,"
        " 'queued', u.p FROM unnest(%s::bigint[], %s::bigint[], %s::int[], %s::jsonb[],"
        " %s::jsonb[]) AS u (j, l, i, f, p)",
        (
            [c.job_id for c, _ in splits],
            [c.layer_id for c, _ in splits],
            [c.index + size for c, size in splits],
            [Json(list(c.frames[size:])) for c, size in splits],
            [Json(_withValue(c, c.frames[size:])) for c, size in splits],
        ),
    )
    kept = [(c, c.frames[:size]) for c, size in splits]
    await _reshape(txn, [(c.task_id, c.index, f, _withValue(c, f)) for c, f in kept])


async def _reshape(
    txn: Transaction, rows: list[tuple[int, int, Sequence[int], dict[str, Any]]]
) -> None:
    """
    Give tasks (id, index, frames, parameters) new values.
    """
    await txn.execute(
        "UPDATE tasks t SET index = u.i,"
        " frames = ARRAY(SELECT jsonb_array_elements_text(u.f)::int), parameters = u.p"
        " FROM unnest(%s::bigint[], %s::int[], %s::jsonb[], %s::jsonb[])"
        " AS u (id, i, f, p) WHERE t.id = u.id",
        (
            [r[0] for r in rows],
            [r[1] for r in rows],
            [Json(list(r[2])) for r in rows],
            [Json(r[3]) for r in rows],
        ),
    )


async def _grow(txn: Transaction, chunk: _Chunk, size: int, held: Sequence[int]) -> bool:
    """
    Take values for C{chunk} from the queued tasks that follow it, until it
    has C{size}; False when none could be taken.
    """
    need = size - len(chunk.frames)
    start = chunk.index + len(chunk.frames)
    following = await txn.query(
        _FOLLOWING, (chunk.layer_id, start, start + need, list(held), MAX_ABSORBED)
    )
    frames = list(chunk.frames)
    others = _others(chunk.parameters, chunk.parameter)
    deleted: list[int] = []
    shrunk: list[tuple[int, int, Sequence[int], dict[str, Any]]] = []
    expected = start
    for taskID, index, theirs, parameters in following:
        # A gap: the task there is held by another claim, running, or done.
        if index != expected or not theirs or parameters is None:
            break
        if _others(parameters, chunk.parameter) != others:
            break
        if chunk.contiguous and theirs[0] != frames[-1] + 1:
            break
        take = min(len(theirs), size - len(frames))
        frames.extend(theirs[:take])
        if take == len(theirs):
            deleted.append(taskID)
        else:
            rest = theirs[take:]
            shrunk.append((taskID, index + take, rest, _withValue(chunk, rest)))
        expected = index + len(theirs)
        if len(frames) >= size:
            break
    if not deleted and not shrunk:
        return False
    if deleted:
        await txn.execute("DELETE FROM tasks WHERE id = ANY (%s::bigint[])", (deleted,))
        # Tasks have no DELETE trigger: the counts are given back here.
        await txn.execute(
            "SELECT masterd_apply_task_deltas(%s::bigint[], %s::bigint[], %s::text[],"
            " %s::int[], true)",
            ([chunk.layer_id], [chunk.job_id], ["queued"], [-len(deleted)]),
        )
    await _reshape(txn, [*shrunk, (chunk.task_id, chunk.index, frames, _withValue(chunk, frames))])
    return True
