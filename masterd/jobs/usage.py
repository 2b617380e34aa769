"""
What work used (issue 17; docs/jobs.md, "Usage"): each attempt's usage as its
agent measured it for the task's process tree (task_attempts, migration
0020), and the totals of a job and of each of its layers, read from them.
"""

from __future__ import annotations

from typing import Any

from masterd.db import Transaction
from masterd.schema import Document

#: For C{FROM task_attempts} (not aliased), after ATTEMPT_COLUMNS.
USAGE_COLUMNS = "wall_s, cpu_user_s, cpu_system_s, peak_rss_kb, gpu_memory_mb"


class AttemptUsage(Document):
    """
    What one attempt used: CPU seconds (user and system) and peak resident
    memory of the task's process tree, its wall time, and the peak GPU
    memory of its processes (null where the agent could not tell).
    """

    wall_s: float
    cpu_user_s: float
    cpu_system_s: float
    peak_rss_mb: float
    gpu_memory_mb: int | None


class UsageTotals(Document):
    """
    The usage of a job's or a layer's attempts, from those that reported it
    (failed and canceled ones too: they used the farm as much).
    """

    #: Attempts that reported their usage.
    attempts: int
    #: CPU time of every attempt (user and system), in core-hours.
    core_hours: float
    #: Wall time of every attempt, in hours.
    wall_hours: float
    #: The largest peak resident memory of any attempt, in MB.
    peak_rss_mb: float | None
    #: The 95th percentile of the attempts' peaks, in MB.
    peak_rss_p95_mb: float | None
    #: The largest GPU memory any attempt used, in MB.
    gpu_memory_mb: int | None
    #: Wall time of the done attempts: mean and 95th percentile, in seconds.
    task_s_mean: float | None
    task_s_p95: float | None
    #: A layer's only: a sentence saying that attempts' peaks passed the
    #: memory the layer asks for (requirements.ram_mb), the usual cause of
    #: out-of-memory failures; null when none did or it asks for none.
    ram_exceeded: str | None = None


def attemptUsage(row: tuple[Any, ...]) -> AttemptUsage | None:
    """
    The usage columns (USAGE_COLUMNS) of an attempt, or None when it reported
    none.
    """
    wall, user, system, rss, gpu = row
    if wall is None:
        return None
    return AttemptUsage(
        wall_s=round(wall, 3),
        cpu_user_s=round(user or 0.0, 3),
        cpu_system_s=round(system or 0.0, 3),
        peak_rss_mb=round((rss or 0) / 1024, 1),
        gpu_memory_mb=gpu,
    )


# Per layer of a job: what its attempts used, and how many of them peaked
# above the memory the layer asks for. Read through task_attempts_job.
_TOTALS = (
    "SELECT l.index, count(*), coalesce(sum(a.cpu_user_s + a.cpu_system_s), 0),"
    " coalesce(sum(a.wall_s), 0), max(a.peak_rss_kb),"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY a.peak_rss_kb), max(a.gpu_memory_mb),"
    " avg(a.wall_s) FILTER (WHERE a.state = 'done'),"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY a.wall_s) FILTER (WHERE a.state = 'done'),"
    " count(*) FILTER (WHERE l.req_ram_mb > 0 AND a.peak_rss_kb > l.req_ram_mb::bigint * 1024),"
    " l.req_ram_mb"
    " FROM task_attempts a JOIN tasks t ON t.id = a.task_id JOIN layers l ON l.id = t.layer_id"
    " WHERE a.job_id = %s AND a.wall_s IS NOT NULL GROUP BY l.index, l.req_ram_mb"
)

# The job's own: its percentiles are over all its attempts, not of layers'.
_JOB = (
    "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY peak_rss_kb),"
    " avg(wall_s) FILTER (WHERE state = 'done'),"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY wall_s) FILTER (WHERE state = 'done')"
    " FROM task_attempts WHERE job_id = %s AND wall_s IS NOT NULL"
)


def _mb(kb: Any) -> float | None:
    return None if kb is None else round(float(kb) / 1024, 1)


def _s(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _exceeded(over: int, attempts: int, declared: int, p95: Any) -> str | None:
    if not over or not declared:
        return None
    return (
        f"{over} of {attempts} attempts peaked above the {declared} MB the layer asks for"
        f" (requirements.ram_mb); their 95th percentile is {_mb(p95):g} MB"
    )


async def jobUsage(
    txn: Transaction, jobID: int
) -> tuple[UsageTotals | None, dict[int, UsageTotals]]:
    """
    The usage of a job and of each of its layers (by the layer's index); None
    and no layers when no attempt reported any.
    """
    rows = await txn.query(_TOTALS, (jobID,))
    if not rows:
        return None, {}
    layers: dict[int, UsageTotals] = {}
    for index, attempts, cpu, wall, peak, peak95, gpu, mean, p95, over, declared in rows:
        layers[index] = UsageTotals(
            attempts=attempts,
            core_hours=round(float(cpu) / 3600, 6),
            wall_hours=round(float(wall) / 3600, 6),
            peak_rss_mb=_mb(peak),
            peak_rss_p95_mb=_mb(peak95),
            gpu_memory_mb=gpu,
            task_s_mean=_s(mean),
            task_s_p95=_s(p95),
            ram_exceeded=_exceeded(over, attempts, declared, peak95),
        )
    [(peak95, mean, p95)] = await txn.query(_JOB, (jobID,))
    peaks = [t.peak_rss_mb for t in layers.values() if t.peak_rss_mb is not None]
    gpus = [t.gpu_memory_mb for t in layers.values() if t.gpu_memory_mb is not None]
    job = UsageTotals(
        attempts=sum(t.attempts for t in layers.values()),
        core_hours=round(sum(float(r[2]) for r in rows) / 3600, 6),
        wall_hours=round(sum(float(r[3]) for r in rows) / 3600, 6),
        peak_rss_mb=max(peaks) if peaks else None,
        peak_rss_p95_mb=_mb(peak95),
        gpu_memory_mb=max(gpus) if gpus else None,
        task_s_mean=_s(mean),
        task_s_p95=_s(p95),
    )
    return job, layers
