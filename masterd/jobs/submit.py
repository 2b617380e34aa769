"""
Writing a checked submission (L{masterd.jobs.spec.JobSpec}): the job, its
layers, its tasks and its dependencies, in the caller's transaction and in
a fixed number of statements whatever the number of tasks.

What only the database can tell is checked here: that parent jobs and
limits exist, and that a frame dependency on a job meets some of its
frames. Parents are locked (C{FOR SHARE}) until the commit, so that none
can finish between the check and the commit and miss releasing the new
job's tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg2.extras import Json

from masterd.db import Transaction
from masterd.errors import NoSuchResource, Unprocessable

from .spec import DependencySpec, JobSpec, LayerSpec


def _overlapping(
    child: Sequence[tuple[int, ...]], parent: Sequence[tuple[int, ...]]
) -> list[list[int]]:
    """
    For each child task (its frames), the positions of the parent tasks
    whose frames meet its own: chunks of any sizes.
    """
    owner: dict[int, list[int]] = {}
    for position, frames in enumerate(parent):
        for frame in frames:
            owner.setdefault(frame, []).append(position)
    found: list[list[int]] = []
    for frames in child:
        positions: dict[int, None] = {}
        for frame in frames:
            for position in owner.get(frame, ()):
                positions[position] = None
        found.append(list(positions))
    return found


async def _parentJobs(txn: Transaction, spec: JobSpec) -> dict[int, str]:
    """
    The state of every job the submission names, locked until the commit.
    """
    wanted: dict[int, str] = {}
    for dependency in spec.job_dependencies:
        assert dependency.job is not None
        wanted.setdefault(dependency.job, dependency.field)
    for layer in spec.layers:
        for dependency in layer.depends_on:
            if dependency.job is not None:
                wanted.setdefault(dependency.job, dependency.field)
    if not wanted:
        return {}
    rows = await txn.query(
        "SELECT id, state FROM jobs WHERE id = ANY (%s) ORDER BY id FOR SHARE", (sorted(wanted),)
    )
    found: dict[int, str] = dict(rows)
    for jobID, field in wanted.items():
        if jobID not in found:
            raise NoSuchResource("job", jobID, field=field)
    return found


async def _checkLimits(txn: Transaction, spec: JobSpec) -> None:
    names: dict[str, str] = {}
    for i, name in enumerate(spec.limits):
        names.setdefault(name, f"limits[{i}]")
    for k, layer in enumerate(spec.layers):
        for i, name in enumerate(layer.limits):
            names.setdefault(name, f"layers[{k}].limits[{i}]")
    if not names:
        return
    # FOR SHARE: the limit cannot be deleted before this job is committed.
    rows = await txn.query(
        "SELECT name FROM limits WHERE name = ANY (%s) ORDER BY name FOR SHARE", (sorted(names),)
    )
    known = {r[0] for r in rows}
    for name, field in names.items():
        if name not in known:
            raise Unprocessable(
                field, f"there is no limit named {name!r} (PUT /api/v1/limits/{name} first)"
            )


def _layerDependencies(spec: JobSpec, layer: LayerSpec) -> list[DependencySpec]:
    """
    Everything the layer depends on: its own dependencies, and the job's
    (which every layer of the job has).
    """
    return [*spec.job_dependencies, *layer.depends_on]


async def insertJob(txn: Transaction, spec: JobSpec, owner: str) -> tuple[int, bool]:
    """
    Insert the job; its id, and whether any of its tasks is queued.
    """
    parents = await _parentJobs(txn, spec)
    await _checkLimits(txn, spec)
    # Frame dependencies on other jobs: those jobs' tasks, locked so that
    # none finishes unseen before the commit.
    parentTasks: dict[int, list[tuple[int, tuple[int, ...], bool]]] = {}
    frameJobs = sorted(
        {d.job for layer in spec.layers for d in _layerDependencies(spec, layer)
         if d.mode == "frame" and d.job is not None}
    )  # fmt: skip
    if frameJobs:
        for parentJob, taskID, frames, state in await txn.query(
            "SELECT job_id, id, frames, state FROM tasks WHERE job_id = ANY (%s)"
            " ORDER BY id FOR SHARE",
            (frameJobs,),
        ):
            parentTasks.setdefault(parentJob, []).append((taskID, tuple(frames), state == "done"))
    r = spec.requirements
    rows = await txn.query(
        "INSERT INTO jobs (title, owner, project, priority, weight, paused, command, env, cwd,"
        " req_cpus, req_ram_mb, req_gpus, req_gpu_memory_mb, req_tags, max_retries,"
        " task_timeout_s, stall_timeout_s, metadata, max_running, preemptible, limits,"
        " req_max_cpus, req_max_ram_mb, req_max_gpus, req_os_family, req_cpu_arch,"
        " req_attributes, req_amounts)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            spec.title, owner, spec.project or owner, spec.priority, spec.weight, spec.paused,
            list(spec.command) if spec.command is not None else None, Json(spec.env), spec.cwd,
            r.cpus, r.ram_mb, r.gpus, r.gpu_memory_mb, list(r.tags), spec.max_retries,
            spec.task_timeout_s, spec.stall_timeout_s, Json(spec.metadata), spec.max_running,
            spec.preemptible, list(spec.limits), r.max_cpus, r.max_ram_mb, r.max_gpus,
            list(r.os_family), list(r.cpu_arch), Json(r.attributes), Json(r.amounts),
        ),
    )  # fmt: skip
    jobID: int = rows[0][0]
    if spec.depends_on:
        await txn.execute(
            "INSERT INTO job_dependencies (parent, child, satisfied)"
            " SELECT p, %s, p = ANY (%s) FROM unnest(%s::bigint[]) AS p",
            (
                jobID,
                [p for p in spec.depends_on if parents[p] == "done"],
                list(spec.depends_on),
            ),
        )
    layerIDs = await _insertLayers(txn, jobID, spec, parents)
    if spec.openjd is not None:
        await _insertOpenJD(txn, jobID, spec, layerIDs)
    waits, edges = _frameEdges(spec, parentTasks)
    blocked = [
        layerIDs[k]
        for k, layer in enumerate(spec.layers)
        if any(_blocks(d, parents) for d in _layerDependencies(spec, layer))
    ]
    taskIDs = await _insertTasks(txn, jobID, spec, layerIDs, waits, blocked, bool(edges))
    await _insertEdges(txn, spec, layerIDs, taskIDs, edges, parents)
    queued = any(layerIDs[k] not in blocked and 0 in waits[k] for k in range(len(spec.layers)))
    return jobID, queued


async def _insertOpenJD(txn: Transaction, jobID: int, spec: JobSpec, layerIDs: list[int]) -> None:
    """
    What an OpenJD job keeps of its template (jobs.openjd, layers.openjd),
    written beside the rows just inserted: native jobs never run this.
    """
    await txn.execute("UPDATE jobs SET openjd = %s WHERE id = %s", (Json(spec.openjd), jobID))
    await txn.execute(
        "UPDATE layers l SET openjd = u.o FROM unnest(%s::bigint[], %s::jsonb[]) AS u (id, o)"
        " WHERE l.id = u.id",
        (layerIDs, [Json(layer.openjd) for layer in spec.layers]),
    )


def _blocks(dependency: DependencySpec, parents: dict[int, str]) -> bool:
    """
    A whole dependency not satisfied when the job is submitted.
    """
    if dependency.mode == "frame":
        return False
    if dependency.layer is not None:
        return True
    assert dependency.job is not None
    return parents[dependency.job] != "done"


async def _insertLayers(
    txn: Transaction, jobID: int, spec: JobSpec, parents: dict[int, str]
) -> list[int]:
    layers = spec.layers
    rows = await txn.query(
        "INSERT INTO layers (job_id, index, name, command, env, cwd, frames, chunk, req_cpus,"
        " req_ram_mb, req_gpus, req_gpu_memory_mb, req_tags, limits, max_running, timeout_s,"
        " stall_timeout_s, blockers, req_max_cpus, req_max_ram_mb, req_max_gpus, req_os_family,"
        " req_cpu_arch, req_attributes, req_amounts)"
        " SELECT %s, u.i - 1, u.name,"
        " CASE WHEN jsonb_typeof(u.command) = 'array'"
        " THEN ARRAY(SELECT jsonb_array_elements_text(u.command)) END,"
        " u.env, u.cwd, u.frames, u.chunk, u.cpus, u.ram, u.gpus, u.gpu_mb,"
        " ARRAY(SELECT jsonb_array_elements_text(u.tags)),"
        " ARRAY(SELECT jsonb_array_elements_text(u.limits)), u.max_running, u.timeout_s,"
        " u.stall_s, u.blockers, u.max_cpus, u.max_ram, u.max_gpus,"
        " ARRAY(SELECT jsonb_array_elements_text(u.os_family)),"
        " ARRAY(SELECT jsonb_array_elements_text(u.cpu_arch)), u.attributes, u.amounts"
        " FROM unnest(%s::text[], %s::jsonb[], %s::jsonb[], %s::text[], %s::text[], %s::int[],"
        " %s::int[], %s::int[], %s::int[], %s::int[], %s::jsonb[], %s::jsonb[], %s::int[],"
        " %s::int[], %s::int[], %s::int[], %s::int[], %s::int[], %s::int[], %s::jsonb[],"
        " %s::jsonb[], %s::jsonb[], %s::jsonb[]) WITH ORDINALITY AS u (name, command, env, cwd,"
        " frames, chunk, cpus, ram, gpus, gpu_mb, tags, limits, max_running, timeout_s,"
        " stall_s, blockers, max_cpus, max_ram, max_gpus, os_family, cpu_arch, attributes,"
        " amounts, i)"
        " ORDER BY u.i RETURNING index, id",
        (
            jobID,
            [layer.name for layer in layers],
            [Json(list(layer.command) if layer.command is not None else None) for layer in layers],
            [Json(layer.env) for layer in layers],
            [layer.cwd for layer in layers],
            [layer.frames for layer in layers],
            [layer.chunk for layer in layers],
            [layer.requirements.cpus for layer in layers],
            [layer.requirements.ram_mb for layer in layers],
            [layer.requirements.gpus for layer in layers],
            [layer.requirements.gpu_memory_mb for layer in layers],
            [Json(list(layer.requirements.tags)) for layer in layers],
            [Json(list(layer.limits)) for layer in layers],
            [layer.max_running for layer in layers],
            [layer.timeout_s for layer in layers],
            [layer.stall_timeout_s for layer in layers],
            [
                sum(1 for d in _layerDependencies(spec, layer) if _blocks(d, parents))
                for layer in layers
            ],
            [layer.requirements.max_cpus for layer in layers],
            [layer.requirements.max_ram_mb for layer in layers],
            [layer.requirements.max_gpus for layer in layers],
            [Json(list(layer.requirements.os_family)) for layer in layers],
            [Json(list(layer.requirements.cpu_arch)) for layer in layers],
            [Json(layer.requirements.attributes) for layer in layers],
            [Json(layer.requirements.amounts) for layer in layers],
        ),
    )
    return [id_ for _, id_ in sorted(rows)]


#: A frame dependency of one task: (child layer, child position, parent
#: layer or None, parent position or task id, satisfied, on_failure).
_Edge = tuple[int, int, int | None, int, bool, str]


def _frameEdges(
    spec: JobSpec, parentTasks: dict[int, list[tuple[int, tuple[int, ...], bool]]]
) -> tuple[list[list[int]], list[_Edge]]:
    """
    Each task's unsatisfied frame dependencies (per layer, per task), and
    every frame dependency edge.
    """
    waits = [[0] * len(layer.tasks) for layer in spec.layers]
    edges: list[_Edge] = []
    seen: set[tuple[int, int, int | None, int]] = set()

    def add(k: int, position: int, layer: int | None, parent: int, done: bool, how: str) -> None:
        # A task waits once for each parent, however many dependencies say so.
        if (k, position, layer, parent) in seen:
            return
        seen.add((k, position, layer, parent))
        edges.append((k, position, layer, parent, done, how))
        if not done:
            waits[k][position] += 1

    for k, layer in enumerate(spec.layers):
        mine = [task.frames for task in layer.tasks]
        for dependency in _layerDependencies(spec, layer):
            if dependency.mode != "frame":
                continue
            if dependency.layer is not None:
                parent = spec.layers[dependency.layer]
                for position, found in enumerate(
                    _overlapping(mine, [task.frames for task in parent.tasks])
                ):
                    for p in found:
                        add(k, position, dependency.layer, p, False, dependency.on_failure)
                continue
            assert dependency.job is not None
            tasks = parentTasks.get(dependency.job, [])
            overlap = _overlapping(mine, [frames for _, frames, _ in tasks])
            if not any(overlap):
                raise Unprocessable(
                    dependency.field + ".mode",
                    f"layer {layer.name!r} and job {dependency.job} have no frame in common",
                )
            for position, found in enumerate(overlap):
                for p in found:
                    taskID, _, done = tasks[p]
                    add(k, position, None, taskID, done, dependency.on_failure)
    return waits, edges


async def _insertTasks(
    txn: Transaction,
    jobID: int,
    spec: JobSpec,
    layerIDs: list[int],
    waits: list[list[int]],
    blocked: list[int],
    returning: bool,
) -> list[list[int]]:
    """
    All tasks of all layers in one statement: all frames in one array and
    each task's end offset in another, sliced apart in SQL. The ids of each
    layer's tasks, in order, when C{returning}.
    """
    frames: list[int] = []
    ends: list[int] = []
    counts: list[int] = []
    layers: list[int] = []
    commands: list[Any] = []
    flat: list[int] = []
    #: OpenJD parameter sets (JSON without newlines), for an OpenJD job only.
    parameters: list[bytes] = []
    #: Each task's index, where a layer's chunks are resized as they are
    #: claimed (migration 0019: the offset of the task's first value);
    #: otherwise its position in the job.
    indexes: list[int] = []
    nextIndex = 0
    spaced = False
    for k, layer in enumerate(spec.layers):
        chunks = (layer.openjd or {}).get("chunks") or {}
        adaptive = bool(chunks.get("adaptive"))
        spaced = spaced or adaptive
        for task in layer.tasks:
            indexes.append(nextIndex)
            nextIndex += len(task.frames) if adaptive else 1
            frames.extend(task.frames)
            ends.append(len(frames))
            counts.append(len(task.frames))
            layers.append(layerIDs[k])
            commands.append(task.command)
            if spec.openjd is not None:
                # None: derived from the frame where it is read (SQL NULL).
                parameters.append(task.parameters if task.parameters is not None else b"null")
        flat.extend(waits[k])
    explicit = any(c is not None for c in commands)
    command = "NULL"
    params: list[Any] = [jobID, frames, blocked, ends, counts, layers, flat]
    columns, types = "e, n, l, w, i", "%s::int[], %s::int[], %s::bigint[], %s::int[]"
    if explicit:
        command = (
            "CASE WHEN jsonb_typeof(u.c) = 'array'"
            " THEN ARRAY(SELECT jsonb_array_elements_text(u.c)) END"
        )
        params.append([Json(list(c) if c is not None else None) for c in commands])
        columns, types = "e, n, l, w, c, i", types + ", %s::jsonb[]"
    index = "u.i - 1"
    if spaced:
        index = "u.x"
        params.append(indexes)
        columns = columns.replace(", i", ", x, i")
        types += ", %s::int[]"
    parameterColumn = "NULL"
    if parameters and any(p != b"null" for p in parameters):
        # One text, a line per task: far cheaper to send than an array of
        # 100,000 quoted texts.
        parameterColumn = "nullif(u.p, 'null'::jsonb)"
        params.append(b"\n".join(parameters).decode("utf-8"))
        columns = columns.replace(", i", ", p, i")
        types += ", string_to_array(%s, E'\\n')::jsonb[]"
    sql = (
        "INSERT INTO tasks (job_id, layer_id, index, frames, command, wait_count, state,"
        " parameters)"
        f" SELECT %s, u.l, {index}, (%s::int[])[u.e - u.n + 1 : u.e], {command}, u.w,"
        " CASE WHEN u.w > 0 OR u.l = ANY (%s::bigint[]) THEN 'waiting' ELSE 'queued' END,"
        f" {parameterColumn}"
        f" FROM unnest({types}) WITH ORDINALITY AS u ({columns})"
    )
    if not returning:
        await txn.execute(sql, params)
        return []
    rows = await txn.query(sql + " RETURNING index, id", params)
    ids = [id_ for _, id_ in sorted(rows)]
    out: list[list[int]] = []
    start = 0
    for layer in spec.layers:
        out.append(ids[start : start + len(layer.tasks)])
        start += len(layer.tasks)
    return out


async def _insertEdges(
    txn: Transaction,
    spec: JobSpec,
    layerIDs: list[int],
    taskIDs: list[list[int]],
    edges: list[_Edge],
    parents: dict[int, str],
) -> None:
    # Frame dependencies are recorded as declared too (for the documents);
    # only the whole ones count in the layers' blockers.
    declared: list[tuple[int, int | None, int | None, str, str, bool]] = []
    for k, layer in enumerate(spec.layers):
        for d in _layerDependencies(spec, layer):
            mode = "frame" if d.mode == "frame" else "whole"
            if d.layer is not None:
                declared.append((layerIDs[k], layerIDs[d.layer], None, mode, d.on_failure, False))
            else:
                assert d.job is not None
                done = parents[d.job] == "done"
                declared.append((layerIDs[k], None, d.job, mode, d.on_failure, done))
    if declared:
        await txn.execute(
            "INSERT INTO layer_dependencies (child, parent_layer, parent_job, mode, on_failure,"
            " satisfied) SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[],"
            " %s::text[], %s::text[], %s::boolean[])",
            tuple(list(column) for column in zip(*declared, strict=True)),
        )
    parentLayers = sorted({w[1] for w in declared if w[1] is not None and w[3] == "whole"})
    if edges:
        parentIDs: list[int] = []
        childIDs: list[int] = []
        satisfied: list[bool] = []
        failures: list[str] = []
        for k, position, parentLayer, parent, done, onFailure in edges:
            childIDs.append(taskIDs[k][position])
            parentIDs.append(taskIDs[parentLayer][parent] if parentLayer is not None else parent)
            satisfied.append(done)
            failures.append(onFailure)
        await txn.execute(
            "INSERT INTO task_dependencies (parent, child, satisfied, on_failure)"
            " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::boolean[], %s::text[])"
            " ON CONFLICT DO NOTHING",
            (parentIDs, childIDs, satisfied, failures),
        )
        await txn.execute(
            "UPDATE tasks SET has_children = true WHERE id = ANY (%s) AND NOT has_children",
            (sorted(set(parentIDs)),),
        )
    if parentLayers:
        # The trigger looks for the layers that depend on a layer only where
        # this says so (for jobs, it looks them up).
        await txn.execute(
            "UPDATE layers SET has_dependents = true WHERE id = ANY (%s) AND NOT has_dependents",
            (parentLayers,),
        )
