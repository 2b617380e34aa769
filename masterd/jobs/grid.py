"""
A job's task states in one compact document, for the dashboard's frame grid:
one character a task in index order, and the task ids as runs, so that
100,000 tasks cost about 100 kB and one indexed scan.
"""

from __future__ import annotations

from masterd.db import Pool
from masterd.errors import NoSuchResource
from masterd.schema import Document

from .views import jobHref

#: The character of each state, and back.
CODES = {"waiting": "W", "queued": "Q", "assigned": "A", "running": "R", "done": "D",
         "failed": "F", "canceled": "C"}  # fmt: skip


class TaskStates(Document):
    href: str
    job: str
    #: One character a task, in index order (see legend).
    states: str
    legend: dict[str, str]
    #: Runs of [first position, its task's id, count]: tasks with
    #: consecutive positions (in index order, from 0) and ids. The task at
    #: position i has id + (i - first position), in the run that holds i.
    #: (Positions, not indexes: an adaptive layer's indexes have gaps.)
    ids: list[list[int]]


async def taskStates(pool: Pool, jobID: int) -> TaskStates:
    rows = await pool.query(
        "SELECT coalesce(string_agg(CASE t.state WHEN 'waiting' THEN 'W' WHEN 'queued' THEN 'Q'"
        " WHEN 'assigned' THEN 'A' WHEN 'running' THEN 'R' WHEN 'done' THEN 'D'"
        " WHEN 'failed' THEN 'F' ELSE 'C' END, '' ORDER BY t.index), ''),"
        " (SELECT coalesce(json_agg(json_build_array(r.i, r.id, r.n) ORDER BY r.i), '[]')"
        "  FROM (SELECT min(p) AS i, min(id) AS id, count(*) AS n"
        "   FROM (SELECT id, row_number() OVER (ORDER BY index) - 1 AS p"
        "    FROM tasks WHERE job_id = j.id) q GROUP BY id - p) r)"
        " FROM jobs j LEFT JOIN tasks t ON t.job_id = j.id WHERE j.id = %s GROUP BY j.id",
        (jobID,),
    )
    if not rows:
        raise NoSuchResource("job", jobID)
    states, runs = rows[0]
    href = jobHref(jobID)
    return TaskStates(
        href=f"{href}/states",
        job=href,
        states=states,
        legend={code: state for state, code in CODES.items()},
        ids=[[int(i), int(first), int(n)] for i, first, n in runs],
    )
