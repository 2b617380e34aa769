"""
Limits (licences) across masters, with real processes: three masters on one
real PostgreSQL, 60 simulated agents (tests/bench/scheduler_load.py, tasks
held for a while) spread over them, several jobs naming a limit of 5. From
the attempt times the database recorded, the largest number of attempts
holding the limit at once is at most 5, and every task completes; the max
lowered to 2 while 5 run lets them finish and assigns no more until fewer
than 2 hold it. Also the limits API over HTTP: in_use, 409 on deleting a
limit unfinished jobs name, 422 naming the field for an unknown limit.

An attempt holds a limit from its started_at (the assignment) to its
finished_at (the master's receipt of the final report).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import psycopg2
from twisted.internet import reactor
from twisted.internet.task import deferLater

from ._postgres import freshDatabase
from ._process import MasterProcess
from .test_cluster_e2e import ClusterBase, report
from .test_e2e import ADMIN, AGENT_TOKEN, farmConfig

LOAD = Path(__file__).with_name("bench") / "scheduler_load.py"
#: The token scheduler_load.py's agents present (tests/bench/talkback_load.py).
LOAD_TOKEN = "bench-agent-token-0123456789"

#: An attempt: (task id, attempt, state, started_at, finished_at, job id),
#: times in seconds since the epoch (finished_at None while it holds).
Attempt = tuple[int, int, str, float, float | None, int]

_HOLDERS = (
    "SELECT a.task_id, a.attempt, a.state, extract(epoch FROM a.started_at)::float8,"
    " extract(epoch FROM a.finished_at)::float8, a.job_id"
    " FROM task_attempts a JOIN tasks t ON t.id = a.task_id JOIN layers l ON l.id = t.layer_id"
)


def query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    finally:
        connection.close()


def holders(dsn: str, where: str, params: Any = None) -> list[Attempt]:
    """
    The attempts of the tasks C{where} selects (over task_attempts a, tasks
    t and layers l).
    """
    return [cast(Attempt, tuple(r)) for r in query(dsn, f"{_HOLDERS} WHERE {where}", params)]


def maxOverlap(attempts: Iterable[Attempt]) -> int:
    """
    The largest number of attempts holding at once. An attempt that ends
    at the very time another starts does not overlap it.
    """
    events: list[tuple[float, int]] = []
    for _, _, _, started, finished, _ in attempts:
        events.append((started, 1))
        events.append((float("inf") if finished is None else finished, -1))
    events.sort()  # at one time, ends (-1) before starts (+1)
    current = highest = 0
    for _, delta in events:
        current += delta
        highest = max(highest, current)
    return highest


def holdingAt(attempts: Iterable[Attempt], at: float, besides: Attempt | None = None) -> int:
    """
    How many attempts (other than C{besides}) hold at time C{at}.
    """
    return sum(
        1 for a in attempts if a is not besides and a[3] <= at and (a[4] is None or at < a[4])
    )


class SimulatedAgents:
    """
    One scheduler_load.py process: C{count} agents (max_tasks 1) on one
    master, each answering an assign with running at once and done after
    0.5 to 1.5 times C{hold} seconds.
    """

    def __init__(self, directory: Path, port: int, count: int, first: int, hold: float) -> None:
        self.logPath = directory / f"agents-{first}.log"
        self._log = self.logPath.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(LOAD), "--port", str(port), "--count", str(count),
             "--first", str(first), "--hold", str(hold), "--period", "1", "--rate", "200"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write(b"quit\n")
                self.process.stdin.flush()
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._log.close()


class SimulatedFarm(ClusterBase):
    """
    Masters on one database, with simulated agents.
    """

    timeout = 180

    async def startFarm(
        self, names: list[str], agentsPerMaster: int, hold: float, **settings: Any
    ) -> str:
        """
        Start the masters and their agents, wait until every agent is idle;
        the database's DSN.
        """
        self.dsn = await freshDatabase(self)
        for name in names:
            directory = self.directory / name
            directory.mkdir(parents=True)
            config = farmConfig(
                directory,
                master={"name": name, "heartbeat_s": 1, "expire_s": 4},
                database={"dsn": self.dsn},
                auth={"tokens": [
                    {"name": "admin", "role": "admin", "token": ADMIN},
                    {"name": "agents", "role": "agent", "token": AGENT_TOKEN},
                    {"name": "load", "role": "agent", "token": LOAD_TOKEN},
                ]},
                talkback={"heartbeat_s": 1, "agent_timeout_s": 10, "lost_grace_s": 10,
                          "reap_interval_s": 0.5},
                **settings,
            )  # fmt: skip
            master = MasterProcess(config, directory)
            self.addCleanup(master.kill)
            self.masters[name] = master
        for name in names:
            self.ports[name] = await self.masters[name].waitForPort()
        for name in names:
            await self.waitFor(lambda n=name: self.call(self.url(n), "GET", "/readyz"),
                               lambda r: r[0] == 200)  # fmt: skip
        for i, name in enumerate(names):
            agents = SimulatedAgents(
                self.directory, self.ports[name], agentsPerMaster, i * agentsPerMaster, hold
            )
            self.addCleanup(agents.stop)
        total = agentsPerMaster * len(names)
        await self.waitFor(
            lambda: self.call(self.url(names[0]), "GET", "/api/v1/agents?state=idle&limit=500"),
            lambda r: r[0] == 200 and len(r[1]["items"]) == total,
        )
        return self.dsn

    async def ok(self, name: str, method: str, path: str, body: Any = None,
                 code: int | None = None) -> Any:  # fmt: skip
        status, answer = await self.call(self.url(name), method, path, body)
        if code is None:
            self.assertLess(status, 300, (method, path, answer))
        else:
            self.assertEqual(status, code, (method, path, answer))
        return answer

    async def allDone(self, name: str, jobs: list[int], timeout: float = 90) -> None:
        async def states() -> list[str | None]:
            return [(await self.job(self.url(name), j)).get("state") for j in jobs]

        await self.waitFor(states, lambda s: all(x == "done" for x in s), timeout, 0.5)

    def assertEveryTaskDoneOnce(self, jobs: list[int]) -> None:
        rows = query(
            self.dsn,
            "SELECT t.id, t.state, (SELECT count(*) FROM task_attempts a WHERE a.task_id = t.id"
            " AND a.state = 'done') FROM tasks t WHERE t.job_id = ANY (%s)"
            " AND (t.state <> 'done' OR (SELECT count(*) FROM task_attempts a"
            " WHERE a.task_id = t.id AND a.state = 'done') <> 1)",
            (jobs,),
        )
        self.assertEqual(rows, [])
        [[open_]] = query(
            self.dsn,
            "SELECT count(*) FROM task_attempts WHERE job_id = ANY (%s) AND finished_at IS NULL",
            (jobs,),
        )
        self.assertEqual(open_, 0)

    def assertOneAtATime(self) -> None:
        """
        No simulated agent (max_tasks 1) ever held two attempts at once:
        each attempt started after the previous one of its agent finished
        (an attempt still open is left out: its final report may be on its
        way while the agent's next task is assigned).
        """
        rows = query(
            self.dsn,
            "SELECT a.agent_id, a.task_id, a.attempt, a.state, a.started_at, a.finished_at,"
            " b.task_id, b.attempt, b.state, b.started_at, b.finished_at"
            " FROM task_attempts a JOIN task_attempts b ON b.agent_id = a.agent_id"
            " AND (b.started_at, b.task_id) > (a.started_at, a.task_id)"
            " AND b.started_at < a.finished_at ORDER BY a.started_at",
        )
        self.assertEqual(rows[:10], [], f"{len(rows)} overlapping pairs")


def limitedTasks(limit: str, each: int) -> list[dict[str, Any]]:
    """
    Three jobs naming C{limit} three ways: on the job; on one layer
    of two; on the job together with a second limit.
    """
    sleep = ["true"]
    return [
        {"title": "job limit", "command": sleep, "frames": f"1-{each}", "limits": [limit]},
        {"title": "layer limit", "layers": [
            {"name": "render", "command": sleep, "frames": f"1-{each}", "limits": [limit]},
            {"name": "free", "command": sleep, "frames": "1-8"},
        ]},
        {"title": "two limits", "command": sleep, "frames": f"1-{each}",
         "limits": [limit, "houdini"]},
    ]  # fmt: skip


#: An attempt's start is stamped just after its claim read the limit's room
#: (masterd.scheduler.claims), by as long as that read takes to come back:
#: a claim stamped this soon after a lower max was answered may have read
#: the max before it.
SLACK = 0.05


def boundAt(changes: list[tuple[float, float, int]], at: float) -> int:
    """
    The max a claim stamped at time C{at} may have read. A change is
    committed between its asking and its answer, and read by claims
    stamped after that: a higher max counts from its asking, a lower one
    once answered (and L{SLACK} past). C{changes}: (asked, answered, max),
    in order.
    """
    bound = changes[0][2]
    for asked, answered, maximum in changes:
        if answered + SLACK < at:
            bound = maximum
        elif asked < at:
            bound = max(bound, maximum)
    return bound


class LimitTests(SimulatedFarm):
    def explain(self, crowded: list[Any], attempts: list[Attempt],
                changes: list[tuple[float, float, int]]) -> str:  # fmt: skip
        """
        For a failure: around each crowded start, who held the limit (times
        relative to that start, and through which master), and the changes.
        """
        masters = dict(query(self.dsn, "SELECT a.task_id || '/' || a.attempt, g.master FROM"
                             " task_attempts a JOIN agents g ON g.id = a.agent_id"))  # fmt: skip
        lines = []
        for a, _, _ in crowded:
            t = a[3]
            lines.append(f"start of {a[0]}/{a[1]} on {masters.get(f'{a[0]}/{a[1]}')}:")
            for b in sorted(attempts, key=lambda x: x[3]):
                if b[3] <= t + 0.05 and (b[4] is None or b[4] > t - 0.05):
                    lines.append(f"  {b[0]}/{b[1]} on {masters.get(f'{b[0]}/{b[1]}')}:"
                                 f" {b[3] - t:+.4f} .. {(b[4] or t) - t:+.4f}")  # fmt: skip
            for asked, answered, maximum in changes:
                if abs(asked - t) < 1:
                    lines.append(f"  max {maximum}: asked {asked - t:+.4f} answered"
                                 f" {answered - t:+.4f}")  # fmt: skip
        return "\n".join(lines)

    async def test_limitAcrossMasters(self) -> None:
        """
        Three masters, 60 agents, a limit of 5 over three jobs (and a job of
        lower priority that takes the other agents). The max goes between 4
        and 5 through different masters, so that the masters' idle agents
        race for each unit of room; then it is lowered to 2 while 5 run.
        Never more than 5 attempts hold it; no attempt starts while as many
        hold it as the max allowed then; those running when it was lowered
        finish; every task completes.
        """
        names = ["m1", "m2", "m3"]
        began = time.monotonic()
        dsn = await self.startFarm(names, 20, hold=0.5)
        setup = time.monotonic() - began
        m1, m2, m3 = names

        # The API: created (201), changed (200), shown with its use.
        created = await self.ok(m1, "PUT", "/api/v1/limits/nuke", {"max": 3}, 201)
        self.assertEqual((created["max"], created["in_use"]), (3, 0))
        asked = time.time()
        changed = await self.ok(m2, "PUT", "/api/v1/limits/nuke",
                                {"max": 5, "description": "Nuke licences"}, 200)  # fmt: skip
        changes = [(asked, time.time(), 5)]
        self.assertEqual((changed["max"], changed["description"]), (5, "Nuke licences"))
        await self.ok(m3, "PUT", "/api/v1/limits/houdini", {"max": 50}, 201)
        code, refused = await self.call(self.url(m1), "POST", "/api/v1/jobs", {
            "title": "unknown", "layers": [
                {"name": "a", "command": ["true"], "frames": "1"},
                {"name": "b", "command": ["true"], "frames": "1", "limits": ["nuke", "katana"]},
            ]})  # fmt: skip
        self.assertEqual(code, 422, refused)
        self.assertEqual(refused["details"]["field"], "layers[1].limits[1]", refused)
        self.assertIn("katana", refused["message"])
        code, refused = await self.call(
            self.url(m2),
            "POST",
            "/api/v1/jobs",
            {"title": "unknown", "command": ["true"], "frames": "1", "limits": ["katana"]},
        )
        self.assertEqual((code, refused["details"]["field"]), (422, "limits[0]"), refused)

        each = 20
        jobs = []
        for i, body in enumerate(limitedTasks("nuke", each)):
            jobs.append((await self.ok(names[i], "POST", "/api/v1/jobs", body, 201))["id"])
        filler = await self.ok(
            m1,
            "POST",
            "/api/v1/jobs",
            {"title": "filler", "command": ["true"], "frames": "1-150", "priority": 40},
        )
        submitted = time.monotonic()
        limited = 3 * each

        # Deleting a limit unfinished jobs name: 409, naming them.
        code, conflict = await self.call(self.url(m3), "DELETE", "/api/v1/limits/nuke")
        self.assertEqual(code, 409, conflict)
        self.assertIn(str(jobs[0]), conflict["message"])

        async def progress() -> tuple[int, int]:
            [[done]] = query(dsn, "SELECT count(*) FROM task_attempts a JOIN tasks t"
                             " ON t.id = a.task_id JOIN layers l ON l.id = t.layer_id"
                             " WHERE a.state = 'done' AND 'nuke' = ANY (l.limits)")  # fmt: skip
            _, limit = await self.call(self.url(m2), "GET", "/api/v1/limits/nuke")
            return int(done), limit.get("in_use", -1) if isinstance(limit, dict) else -1

        async def put(name: str, maximum: int) -> dict[str, Any]:
            asked = time.time()
            answer: dict[str, Any] = await self.ok(
                name, "PUT", "/api/v1/limits/nuke", {"max": maximum}, 200
            )
            changes.append((asked, time.time(), maximum))
            return answer

        # 4, 5, 4, 5... through each master in turn: each rise is a unit of
        # room that every master's idle agents are offered at once.
        toggles = 0
        while (await progress())[0] < limited // 2:
            await put(names[toggles % 3], 4 if toggles % 2 == 0 else 5)
            toggles += 1
            await deferLater(reactor, 0.15)
        if changes[-1][2] != 5:
            await put(m1, 5)

        # Lowered to 2 while 5 hold it.
        seen = await self.waitFor(progress, lambda p: p[1] == 5, timeout=30, interval=0.02)
        self.assertLess(seen[0], limited)
        lowered = await put(m2, 2)
        _, answered, _ = changes[-1]
        self.assertEqual(lowered["max"], 2)
        # Shown above its max until enough of them finish.
        self.assertGreater(lowered["in_use"], 2, lowered)
        listed = await self.ok(m3, "GET", "/api/v1/limits")
        self.assertEqual([x["name"] for x in listed["items"]], ["houdini", "nuke"])

        await self.allDone(m1, [*jobs, filler["id"]])
        finished = time.monotonic() - submitted
        self.assertEveryTaskDoneOnce([*jobs, filler["id"]])

        attempts = holders(dsn, "%s = ANY (l.limits)", ("nuke",))
        self.assertEqual(len({a[0] for a in attempts}), limited)
        # Those holding it when it was lowered ran to the end.
        self.assertEqual({a[2] for a in attempts}, {"done"})
        highest = maxOverlap(attempts)
        self.assertLessEqual(highest, 5)
        # It was reached: 60 agents wanted the work.
        self.assertEqual(maxOverlap(a for a in attempts if a[3] < changes[1][0]), 5)
        # Every attempt started while fewer held the limit than the max the
        # claim could have read.
        crowded = [(a, holdingAt(attempts, a[3], a), boundAt(changes, a[3])) for a in attempts
                   if holdingAt(attempts, a[3], a) >= boundAt(changes, a[3])]  # fmt: skip
        self.assertEqual(crowded, [], self.explain(crowded, attempts, changes))

        # Lowered to 2: none starts until fewer than 2 hold it, then 2 do.
        atChange = holdingAt(attempts, answered)
        self.assertGreater(atChange, 2)
        after = [a for a in attempts if a[3] > answered + SLACK]
        self.assertTrue(after)
        firstAfter = min(a[3] for a in after)
        self.assertLessEqual(holdingAt(attempts, firstAfter - 1e-6), 1)
        self.assertEqual(maxOverlap(after), 2)

        # Other work went on while the limit was full: the filler ran.
        fillerAttempts = holders(dsn, "a.job_id = %s", (filler["id"],))
        lastLimited = max(a[4] or 0 for a in attempts)
        self.assertLess(max(a[4] or 0 for a in fillerAttempts), lastLimited)

        # Nothing holds it now; deletable now that its jobs are done.
        now = await self.ok(m1, "GET", "/api/v1/limits/nuke")
        self.assertEqual(now["in_use"], 0)
        await self.ok(m3, "DELETE", "/api/v1/limits/nuke", code=204)
        code, _ = await self.call(self.url(m1), "GET", "/api/v1/limits/nuke")
        self.assertEqual(code, 404)

        perMaster = query(dsn, "SELECT g.master, count(*) FROM task_attempts a JOIN tasks t"
                          " ON t.id = a.task_id JOIN layers l ON l.id = t.layer_id"
                          " JOIN agents g ON g.id = a.agent_id WHERE 'nuke' = ANY (l.limits)"
                          " GROUP BY 1 ORDER BY 1")  # fmt: skip
        report({
            "setup_s": round(setup, 1), "jobs_s": round(finished, 1), "toggles": toggles,
            "max_overlap": highest, "holding_when_lowered": atChange,
            "max_overlap_after_lowering": maxOverlap(after),
            "first_start_after_lowering_s": round(firstAfter - answered, 3),
            "limited_attempts_by_master": dict(perMaster),
        }, self.directory)  # fmt: skip
