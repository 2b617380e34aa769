"""
Several masters on one real PostgreSQL, end to end, with real processes:
three masters behind a real HAProxy, twenty reference agents, a job of
thousands of short tasks, and one master killed with SIGKILL in the middle.
Also: a cancel made through one master reaching the agents another holds
(the NOTIFY relay between masters).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.python import log as twistedLog
from twisted.trial.unittest import SkipTest, TestCase

from ._postgres import freshDatabase
from ._process import MasterProcess, alive, call
from .test_e2e import ADMIN, AgentProcess, farmConfig

# The issue asks for 2,000 tasks; MASTERD_CLUSTER_E2E_TASKS overrides it for
# a quicker run while developing.
TASKS = int(os.environ.get("MASTERD_CLUSTER_E2E_TASKS", "2000"))
AGENTS = 20

HAPROXY_CONFIG = """\
global
    maxconn 4000

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 3600s
    timeout http-request 10s

frontend masterd
    bind 127.0.0.1:{port}
    default_backend masters

backend masters
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 maxconn 2000
{servers}
"""


def freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def masterConfig(directory: Path, name: str, dsn: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return farmConfig(
        directory,
        master={"name": name, "heartbeat_s": 1, "expire_s": 4},
        database={"dsn": dsn},
        # Long enough for an agent to find a surviving master through its
        # backoff (a few seconds) and keep its tasks.
        talkback={
            "heartbeat_s": 1,
            "agent_timeout_s": 4,
            "lost_grace_s": 10,
            "reap_interval_s": 0.5,
        },
    )


class HAProxyProcess:
    def __init__(self, directory: Path, ports: list[int]) -> None:
        self.port = freePort()
        servers = "\n".join(f"    server m{i} 127.0.0.1:{p} check" for i, p in enumerate(ports, 1))
        self.configPath = directory / "haproxy.cfg"
        self.configPath.write_text(HAPROXY_CONFIG.format(port=self.port, servers=servers))
        self.logPath = directory / "haproxy.log"
        self._log = self.logPath.open("wb")
        self.process = subprocess.Popen(
            [str(shutil.which("haproxy")), "-f", str(self.configPath), "-db"],
            cwd=directory,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def log(self) -> str:
        return self.logPath.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def report(figures: dict[str, Any], directory: Path) -> None:
    """
    Figures for a person to read: in the trial log, on stderr, and in a file.
    """
    text = json.dumps(figures, indent=2, sort_keys=True)
    (directory / "figures.json").write_text(text)
    twistedLog.msg(f"cluster e2e figures: {text}")
    sys.stderr.write(f"\ncluster e2e figures: {text}\n")


class ClusterBase(TestCase):
    timeout = 600

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        self.masters: dict[str, MasterProcess] = {}
        self.ports: dict[str, int] = {}
        self.haproxy: HAProxyProcess | None = None
        self.agents: list[AgentProcess] = []

    async def startMasters(self, dsn: str, names: list[str]) -> None:
        for name in names:
            directory = self.directory / name
            master = MasterProcess(masterConfig(directory, name, dsn), directory)
            self.addCleanup(master.kill)
            self.masters[name] = master
        for name in names:
            self.ports[name] = await self.masters[name].waitForPort()
            await self.waitFor(
                partial(self.call, self.url(name), "GET", "/readyz"), lambda r: r[0] == 200
            )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def startAgents(self, count: int, master: str) -> None:
        for i in range(count):
            agent = AgentProcess(self.directory / "agents", f"agent{i:02d}", master, 1)
            self.addCleanup(agent.stop)
            self.agents.append(agent)

    async def call(self, base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await call(base, path, ADMIN, method, body)

    def logs(self) -> str:
        parts = [f"--- {name} ---\n{m.log()[-2500:]}" for name, m in self.masters.items()]
        if self.haproxy is not None:
            parts.append(f"--- haproxy ---\n{self.haproxy.log()[-1500:]}")
        return "\n".join(parts)

    async def waitFor(
        self,
        fetch: Callable[[], Awaitable[Any]],
        done: Callable[[Any], bool],
        timeout: float = 60.0,
        interval: float = 0.2,
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = await fetch()
            if done(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; last: {str(result)[:2000]}\n{self.logs()}")
            await deferLater(reactor, interval)

    async def agentList(self, base: str) -> list[dict[str, Any]]:
        code, body = await self.call(base, "GET", "/api/v1/agents?limit=500")
        return list(body["items"]) if code == 200 else []

    async def job(self, base: str, jobID: int) -> dict[str, Any]:
        code, body = await self.call(base, "GET", f"/api/v1/jobs/{jobID}")
        return dict(body) if code == 200 else {"state": None, "code": code, "body": body}


def _returning(f: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        return f()

    return call


class FailoverTests(ClusterBase):
    async def test_masterKilledMidJob(self) -> None:
        """
        Three masters behind HAProxy, twenty agents, a job of thousands of
        short tasks; the master holding the most agents is killed with
        SIGKILL once a third of the tasks are done. Its agents reconnect
        through HAProxy to the survivors, the job completes, every task has
        exactly one done attempt, and the dead master is shown down.
        """
        if shutil.which("haproxy") is None:
            raise SkipTest("haproxy is not installed: apt-get install haproxy")
        figures: dict[str, Any] = {"tasks": TASKS, "agents": AGENTS}
        started = time.monotonic()
        dsn = await freshDatabase(self)
        names = ["m1", "m2", "m3"]
        await self.startMasters(dsn, names)
        self.haproxy = HAProxyProcess(self.directory, [self.ports[n] for n in names])
        self.addCleanup(self.haproxy.kill)
        front = f"http://127.0.0.1:{self.haproxy.port}"
        await self.waitFor(lambda: self.call(front, "GET", "/readyz"), lambda r: r[0] == 200)

        self.startAgents(AGENTS, front)
        await self.waitFor(
            lambda: self.call(front, "GET", "/api/v1/agents?state=idle"),
            lambda r: r[0] == 200 and len(r[1]["items"]) == AGENTS,
        )
        agents = await self.agentList(front)
        figures["agents_per_master_before"] = dict(collections.Counter(a["master"] for a in agents))
        figures["setup_s"] = round(time.monotonic() - started, 1)

        doneLog = self.directory / "done.log"
        submitted = time.monotonic()
        code, job = await self.call(
            front, "POST", "/api/v1/jobs",
            {"title": "many", "frames": f"1-{TASKS}", "chunk": 1,
             "command": ["sh", "-c", f"echo {{frame}} >> {doneLog}"]},
        )  # fmt: skip
        self.assertEqual(code, 201, job)
        jobID = job["id"]

        # A third done: kill the master holding the most agents.
        third = await self.waitFor(
            lambda: self.job(front, jobID),
            lambda j: j.get("tasks", {}).get("done", 0) >= TASKS // 3,
            timeout=400,
            interval=0.5,
        )
        agents = await self.agentList(front)
        held = collections.Counter(a["master"] for a in agents if a["master"])
        victim, count = held.most_common(1)[0]
        survivors = [n for n in names if n != victim]
        killedAt = time.monotonic()
        self.masters[victim].process.send_signal(signal.SIGKILL)
        self.masters[victim].process.wait()
        figures["killed"] = {
            "master": victim,
            "agents_held": count,
            "after_s": round(killedAt - submitted, 1),
            "done_when_chosen": third["tasks"]["done"],
        }

        # Its agents come back through HAProxy, to the survivors.
        def allOnSurvivors(agents: list[dict[str, Any]]) -> bool:
            return len(agents) == AGENTS and all(
                a["master"] in survivors and a["state"] != "offline" for a in agents
            )

        await self.waitFor(lambda: self.agentList(front), allOnSurvivors, timeout=90)
        figures["agents_back_after_kill_s"] = round(time.monotonic() - killedAt, 2)
        # Agents whose first reconnection went to the dead master through
        # HAProxy (before its health check dropped it) and failed.
        figures["failed_reconnections"] = sum(
            agent.logPath.read_text(errors="replace").count("cannot connect to")
            for agent in self.agents
        )

        job = await self.waitFor(
            lambda: self.job(front, jobID),
            lambda j: j["state"] == "done",
            timeout=500,
            interval=0.5,
        )
        figures["job_s"] = round(time.monotonic() - submitted, 1)
        figures["tasks_per_s"] = round(TASKS / figures["job_s"], 1)
        self.assertEqual(job["tasks"]["done"], TASKS)
        self.assertEqual(job["tasks"]["total"], TASKS)

        # The record: every task done once, by one agent.
        connection = psycopg2.connect(dsn)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT task_id FROM task_attempts WHERE job_id = %s AND state = 'done'"
                    " GROUP BY task_id HAVING count(*) <> 1",
                    (jobID,),
                )
                self.assertEqual(cursor.fetchall(), [])
                cursor.execute(
                    "SELECT count(*), count(DISTINCT task_id) FROM task_attempts"
                    " WHERE job_id = %s AND state = 'done'",
                    (jobID,),
                )
                self.assertEqual(cursor.fetchone(), (TASKS, TASKS))
                cursor.execute(
                    "SELECT t.id FROM tasks t JOIN task_attempts a"
                    " ON a.task_id = t.id AND a.state = 'done'"
                    " WHERE t.job_id = %s AND (t.state <> 'done' OR a.attempt <> t.attempt"
                    " OR a.agent_id IS DISTINCT FROM t.agent_id)",
                    (jobID,),
                )
                self.assertEqual(cursor.fetchall(), [])
                cursor.execute(
                    "SELECT state, count(*) FROM task_attempts WHERE job_id = %s GROUP BY state",
                    (jobID,),
                )
                attempts = dict(cursor.fetchall())
                cursor.execute(
                    "SELECT count(*) FROM task_attempts WHERE job_id = %s AND finished_at IS NULL",
                    (jobID,),
                )
                [[open_]] = cursor.fetchall()
                cursor.execute(
                    "SELECT DISTINCT t.frames[1] FROM tasks t JOIN task_attempts a"
                    " ON a.task_id = t.id AND a.state = 'lost' WHERE t.job_id = %s",
                    (jobID,),
                )
                lostFrames = {str(r[0]) for r in cursor.fetchall()}
        finally:
            connection.close()
        self.assertEqual(open_, 0)
        figures["attempts_by_state"] = attempts
        figures["requeued_lost"] = attempts.get("lost", 0)

        # Every frame ran, and ran once unless an attempt of it was lost (its
        # agent away longer than the lost grace): tasks running on the killed
        # master's agents carried on (listed in their next hello), and final
        # reports it received but never committed were sent again (acks).
        lines = collections.Counter(doneLog.read_text().split())
        self.assertEqual(set(lines), {str(f) for f in range(1, TASKS + 1)})
        twice = {f for f, n in lines.items() if n > 1}
        figures["duplicated_lines"] = sum(n - 1 for n in lines.values() if n > 1)
        self.assertEqual(twice - lostFrames, set(), "frames run twice without a lost attempt")

        # The killed master is down, the two others up, whoever is asked.
        def states(r: tuple[int, Any]) -> dict[str, str]:
            if r[0] != 200:
                return {}
            return {m["name"]: m["state"] for m in r[1]["items"]}

        expected = {victim: "down", **{n: "up" for n in survivors}}
        result = await self.waitFor(
            lambda: self.call(front, "GET", "/api/v1/masters"),
            lambda r: states(r) == expected,
            timeout=4 + 10,
        )
        self.assertEqual(states(result), expected)
        for name in survivors:
            code, body = await self.call(self.url(name), "GET", "/api/v1/masters")
            self.assertEqual(states((code, body)), expected)
        figures["total_s"] = round(time.monotonic() - started, 1)
        report(figures, self.directory)


class CancelRelayTests(ClusterBase):
    async def test_cancelThroughAnotherMaster(self) -> None:
        """
        A job canceled through master A while its tasks run on agents held
        by master B: B hears of it (NOTIFY) and sends the cancels; the
        processes end and the job is canceled.
        """
        dsn = await freshDatabase(self)
        await self.startMasters(dsn, ["a", "b"])
        self.startAgents(2, self.url("b"))
        await self.waitFor(
            lambda: self.call(self.url("a"), "GET", "/api/v1/agents?state=idle"),
            lambda r: r[0] == 200 and len(r[1]["items"]) == 2,
        )
        agents = await self.agentList(self.url("a"))
        self.assertEqual([a["master"] for a in agents], ["b", "b"])

        pids = self.directory / "pids"
        pids.mkdir()
        running: list[int] = []

        def killLeftovers() -> None:
            # Only the task processes this test started, should it fail.
            for pid in running:
                if alive(pid):
                    try:
                        os.killpg(os.getpgid(pid), signal.SIGKILL)
                    except OSError:
                        pass

        self.addCleanup(killLeftovers)
        code, job = await self.call(
            self.url("b"), "POST", "/api/v1/jobs",
            {"title": "long", "frames": "1-2",
             "command": ["sh", "-c", f"echo $$ > {pids}/{{frame}}.pid; sleep 300"]},
        )  # fmt: skip
        self.assertEqual(code, 201, job)
        await self.waitFor(
            lambda: self.job(self.url("a"), job["id"]),
            lambda j: j.get("tasks", {}).get("running") == 2,
        )

        def pidFiles() -> list[int]:
            values = []
            for path in pids.iterdir():
                text = path.read_text().strip()
                if text:
                    values.append(int(text))
            return values

        found = await self.waitFor(_returning(pidFiles), lambda values: len(values) == 2)
        running.extend(found)
        self.assertTrue(all(alive(pid) for pid in running))

        canceledAt = time.monotonic()
        code, body = await self.call(self.url("a"), "POST", f"/api/v1/jobs/{job['id']}/cancel")
        self.assertEqual(code, 200, body)
        await self.waitFor(
            _returning(lambda: [alive(pid) for pid in running]),
            lambda states: not any(states),
            timeout=15,
        )
        elapsed = time.monotonic() - canceledAt
        job = await self.job(self.url("a"), job["id"])
        self.assertEqual(job["state"], "canceled")
        self.assertEqual(job["tasks"]["canceled"], 2)
        # Both agents are free again, still held by B.
        await self.waitFor(
            lambda: self.call(self.url("a"), "GET", "/api/v1/agents?state=idle"),
            lambda r: r[0] == 200 and [a["master"] for a in r[1]["items"]] == ["b", "b"],
        )
        report({"cancel_to_processes_gone_s": round(elapsed, 2)}, self.directory)
