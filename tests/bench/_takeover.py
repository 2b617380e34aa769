"""
The takeover case of talkback_bench.py (C{--takeover}): how fast a second
master takes N agents over when theirs dies, and whether any task runs twice.

One PostgreSQL (pgserver, as cluster_bench.py starts it) and two masters on
it, A (bench-a) and B (bench-b): twistd subprocesses with C{database.dsn},
each its own loopback port with a listen backlog of 4096, scheduler sweep
1 s, master heartbeat 2 s and expiry 10 s (so that B declares A down within
the settle window; C{--config} YAML is merged into both configs and can set
them back). One job of N (C{--connections}) no-op tasks is submitted
through A's API; C{--processes} generators (talkback_load.py C{--ports A,B
--hold}) open N agents (max_tasks 1) on A at C{--rate} a second; each answers
its assign with C{running} and holds the task.

Once every agent is welcomed and every task is running (in the database), A
is killed with SIGKILL. The agents reconnect to B at once, listing their
task. Measured: the time from the kill until B has welcomed all N (from the
generators' counters; target <= 5 s); B's CPU over that window (CPU seconds
and % of one core), PostgreSQL's and the generators'; the reconnections'
latency, loss to welcome and connect to welcome (p50/p99/max, the worst
generator's); reconnections failed, agents refused or dropped (target 0);
listen queue overflows. After C{--settle} s, from the database: tasks rerun
(more than one attempt, an attempt lost, or back in queued; target 0), tasks
by state, agents by master, and B's talkback counters (GET /api/v1/master).
Then the generators are told C{finish}; once the job is done (or after a
bounded wait) every task must have exactly one attempt, done.

Exit status: 0 once measured (whatever the figures), 1 if an agent is
refused, fails or is dropped, a master dies unexpectedly, or the agents or
the job do not get there in time. With MASTERD_BENCH_KEEP=1 in the
environment the temporary directory (both masters' logs, the database) is
kept and its path printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import yaml

from tests.bench.cluster_bench import AGENT_TOKEN, Server, one, startMaster
from tests.bench.http_bench import _SUSPICIOUS, freePort, get, waitFor
from tests.bench.scheduler_bench import committed, master, submit
from tests.bench.talkback_bench import (
    ADMIN,
    BenchFailure,
    Loads,
    cpu,
    idle,
    listenOverflows,
    ramp,
    stopOrphan,
    tail,
    verdict,
)

TARGET_S = 5.0
FAILURES = ("failed", "reconnect_failed", "dropped", "rejected")


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


class Master:
    """
    One master subprocess (twistd) on the shared database.
    """

    def __init__(self, tmp: Path, name: str, dsn: str, extra: str) -> None:
        self.name, self.port = name, freePort()
        directory = tmp / name
        directory.mkdir()
        config = {
            "master": {"name": name, "heartbeat_s": 2, "expire_s": 10},
            "http": {
                "listen": [f"tcp:{self.port}:interface=127.0.0.1:backlog=4096"],
                "access_log": False,
            },
            "database": {"dsn": dsn},
            "auth": {
                "tokens": [
                    {"name": "bench", "role": "admin", "token": ADMIN},
                    {"name": "agents", "role": "agent", "token": AGENT_TOKEN},
                ]
            },
            "scheduler": {"sweep_s": 1},
        }
        merge(config, yaml.safe_load(extra) or {})
        path = directory / "master.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.log = directory / "master.log"
        self.popen = startMaster(path, self.log)
        self.proc = psutil.Process(self.popen.pid)
        self.killed = False

    def kill(self) -> None:
        self.killed = True
        self.popen.kill()  # SIGKILL
        self.popen.wait()

    def check(self) -> None:
        if self.popen.poll() is not None and not self.killed:
            raise BenchFailure(f"master {self.name} exited with status {self.popen.returncode}")

    def talkback(self) -> dict[str, Any]:
        return dict(master(self.port)["talkback"])

    def masters(self) -> dict[str, str]:
        """
        The masters as this one sees them (GET /api/v1/masters): name: state.
        """
        status, body = get(f"http://127.0.0.1:{self.port}/api/v1/masters", ADMIN, timeout=30)
        if status != 200:
            raise BenchFailure(f"GET /api/v1/masters answered {status}: {body[:300]!r}")
        return {m["name"]: m["state"] for m in json.loads(body)["items"]}

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                print(f"{self.name} ignored SIGTERM for 60 s; killing it")
                self.popen.kill()
                self.popen.wait()

    def suspicious(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if _SUSPICIOUS.search(line)]


def failures(each: list[dict[str, Any]]) -> dict[str, int]:
    return {k: sum(e.get(k, 0) for e in each) for k in FAILURES}


def checkAgents(each: list[dict[str, Any]]) -> None:
    bad = failures(each)
    if any(bad.values()):
        first = next((e["first_error"] for e in each if e["first_error"]), "")
        raise BenchFailure(f"agents: {json.dumps(bad)}; first error: {first}")


def total(each: list[dict[str, Any]], key: str) -> int:
    return sum(int(e.get(key) or 0) for e in each)


def worst(each: list[dict[str, Any]], key: str) -> list[float]:
    return [max(v) for v in zip(*(e[key] for e in each), strict=True)]


def states(db: Any, table: str, job: int) -> dict[str, int]:
    rows = one(db, f"SELECT state, count(*) FROM {table} WHERE job_id = %s GROUP BY 1", (job,))
    return dict(sorted(rows))


RERUN = """
SELECT count(*) FILTER (WHERE t.state = 'queued'),
       count(*) FILTER (WHERE x.n > 1),
       count(*) FILTER (WHERE x.lost > 0),
       count(*) FILTER (WHERE t.state = 'queued' OR x.n > 1 OR x.lost > 0)
FROM tasks t LEFT JOIN (
    SELECT task_id, count(*) AS n, count(*) FILTER (WHERE state = 'lost') AS lost
    FROM task_attempts WHERE job_id = %s GROUP BY task_id) x ON x.task_id = t.id
WHERE t.job_id = %s
"""
EXACTLY_ONE = """
SELECT count(*) FILTER (WHERE t.state = 'done'),
       count(*) FILTER (WHERE NOT (t.state = 'done' AND x.n = 1 AND x.done = 1))
FROM tasks t LEFT JOIN (
    SELECT task_id, count(*) AS n, count(*) FILTER (WHERE state = 'done') AS done
    FROM task_attempts WHERE job_id = %s GROUP BY task_id) x ON x.task_id = t.id
WHERE t.job_id = %s
"""


def until(what: str, seconds: float, done: Any, masters: list[Master], loads: Loads) -> float:
    """
    Poll C{done(each)} every 0.5 s (masters alive, no agent failing) until
    true; the seconds it took.
    """
    started = time.monotonic()
    while True:
        for m in masters:
            m.check()
        each = loads.each()
        checkAgents(each)
        if done(each):
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            raise BenchFailure(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.5)


def takeover(a: Master, b: Master, loads: Loads, server: Server, n: int) -> dict[str, Any]:
    """
    Kill A; wait until B has welcomed every agent again. The figures.
    """
    overflows, machine = listenOverflows(), psutil.cpu_times()
    before = {"b": cpu([b.proc]), "pg": server.pg.cpu(), "gen": cpu(loads.ps)}
    killed = time.monotonic()
    a.kill()
    last = killed
    while True:
        time.sleep(0.1)
        b.check()
        each = loads.each()
        checkAgents(each)
        rewelcomed = total(each, "rewelcomed")
        if rewelcomed >= n:
            break
        now = time.monotonic()
        if now - killed > max(60.0, n / 100):
            raise BenchFailure(
                f"{n - rewelcomed} agents not welcomed by B {now - killed:.0f} s after the"
                f" kill; {total(each, 'reconnects')} reconnections"
            )
        if now - last >= 1:
            last = now
            print(f"  {now - killed:5.1f} s: {rewelcomed} of {n} welcomed by {b.name}")
    end = time.monotonic()
    after = {"b": cpu([b.proc]), "pg": server.pg.cpu(), "gen": cpu(loads.ps)}
    lastAt = max(e["last_rewelcome_at"] or killed for e in each)
    firstLoss = min(e["first_loss_at"] or end for e in each)
    return {
        "all_s": lastAt - killed, "first_loss_s": firstLoss - killed, "window": end - killed,
        "cpu": {k: after[k] - before[k] for k in after}, "each": each,
        "overflows": listenOverflows() - overflows, "machine": (machine, psutil.cpu_times()),
    }  # fmt: skip


def report(n: int, f: dict[str, Any]) -> None:
    t, each, window = f["takeover"], f["takeover"]["each"], f["takeover"]["window"]
    pct = {k: v / window * 100 for k, v in t["cpu"].items()}
    m0, m1 = t["machine"]
    busy = 1 - (idle(m1) - idle(m0)) / (sum(m1) - sum(m0))
    rew, rec = worst(each, "rewelcome_ms"), worst(each, "reconnect_welcome_ms")
    q = "p50 {:.0f} ms, p99 {:.0f} ms, max {:.0f} ms"
    settle = f["settle"]
    rerun = f["rerun"]
    tb = f["talkback"]
    print()
    for label, value in [
        ("ramp-up (on A)", f["ramp"]),
        ("A killed", f"{n} agents welcomed, {f['running']} tasks running"),
        ("first loss seen", f"{t['first_loss_s'] * 1e3:.0f} ms after the kill"),
        ("all N welcomed by B", f"{t['all_s']:.2f} s after the kill"
                                f"   <= {TARGET_S:g} s  {verdict(t['all_s'] <= TARGET_S)}"),
        ("loss -> welcome (B)", q.format(*rew)),
        ("connect -> welcome (B)", q.format(*rec)),
        ("reconnections", f"{total(each, 'reconnects')} started, {total(each, 'rewelcomed')}"
                          f" welcomed, {total(each, 'reconnect_failed')} failed"),
        ("B CPU, kill -> all welcomed", f"{t['cpu']['b']:.2f} CPU s in {window:.2f} s"
                                        f" = {pct['b']:.0f} % of one core"),
        ("PostgreSQL CPU, same window", f"{t['cpu']['pg']:.2f} CPU s = {pct['pg']:.0f} %"),
        ("generators CPU, same window", f"{t['cpu']['gen']:.2f} CPU s = {pct['gen']:.0f} %"),
        ("machine busy, same window", f"{busy * (psutil.cpu_count() or 1) * 100:.0f} % of one"
                                      f" core ({psutil.cpu_count()} cores)"),
        ("listen queue overflows", f"{t['overflows']} during the takeover"),
        (f"B CPU, next {settle['wall']:.0f} s", f"{settle['b'] / settle['wall'] * 100:.1f} %"
                                                 " of one core (settling)"),
        ("tasks rerun (DB)", f"{rerun['any']}: {rerun['queued']} queued, {rerun['attempts']}"
                             f" with > 1 attempt, {rerun['lost']} with a lost attempt"
                             f"   0  {verdict(rerun['any'] == 0)}"),
        ("tasks / attempts by state", f"{json.dumps(f['tasks'])} / {json.dumps(f['attempts'])}"),
        ("agents by master (DB)", json.dumps(f["agents"])),
        ("masters as B sees them (API)", json.dumps(f["masters"], sort_keys=True)),
        ("agents assigned again / cancels", f"{total(each, 'assigned_again')} /"
                                            f" {total(each, 'cancels')}"),
        ("B talkback (API)", f"agents_connected {tb['agents_connected']}, in"
                             f" {json.dumps(tb['messages_in'], sort_keys=True)}, out"
                             f" {json.dumps(tb['messages_out'], sort_keys=True)},"
                             f" errors {tb['errors']}"),
        ("refused / failed / dropped", f"{json.dumps(failures(f['end']))}"
                                       f"   0  {verdict(not any(failures(f['end']).values()))}"),
        ("after finish", f["finish"]),
        ("after the generators quit", f["gone"]),
        ("exactly one attempt, done", f"{n - f['bad']} of {n} tasks"
                                      f"   {verdict(f['bad'] == 0)}"),
    ]:  # fmt: skip
        print(f"{label:34}{value}")


def measure(args: argparse.Namespace, server: Server, tmp: Path, ms: list[Master]) -> bool:
    n = args.connections
    dsn = server.create("masterd_takeover")
    a = Master(tmp, "bench-a", dsn, args.config)
    ms.append(a)
    b = Master(tmp, "bench-b", dsn, args.config)
    ms.append(b)
    startup = max(waitFor(f"http://127.0.0.1:{m.port}/readyz", m.popen, 90.0) for m in ms)
    job = submit(a.port, 1, f"1-{n}", 1)[0]
    print(f"masters ready after {startup:.1f} s: {a.name} on {a.port} (pid {a.popen.pid}),"
          f" {b.name} on {b.port} (pid {b.popen.pid}); logs in {tmp}; job {job} of {n} tasks;"
          f" somaxconn {Path('/proc/sys/net/core/somaxconn').read_text().strip()}")  # fmt: skip
    f: dict[str, Any] = {}
    loads = Loads(args, a.port, ports=f"{a.port},{b.port}", hold=True)
    try:
        with closing(psycopg2.connect(dsn)) as db:
            db.autocommit = True
            f["ramp"] = ramp(args, a.popen, loads)
            running = "SELECT count(*) FROM tasks WHERE job_id = %s AND state = 'running'"
            took = until("every task assigned and running", 60 + n / 200,
                         lambda e: total(e, "held") >= n and one(db, running, (job,))[0][0] >= n,
                         ms, loads)  # fmt: skip
            f["running"] = one(db, running, (job,))[0][0]
            print(f"every task running {took:.1f} s after the ramp; killing {a.name}")
            f["takeover"] = takeover(a, b, loads, server, n)
            print(f"all welcomed by {b.name}; settling {args.settle:g} s")
            start, b0 = time.monotonic(), cpu([b.proc])
            until("settling", args.settle + 5,
                  lambda e: time.monotonic() - start >= args.settle, ms, loads)  # fmt: skip
            f["settle"] = {"b": cpu([b.proc]) - b0, "wall": time.monotonic() - start}
            queued, attempts, lost, anyRerun = one(db, RERUN, (job, job))[0]
            f["rerun"] = {"queued": queued, "attempts": attempts, "lost": lost, "any": anyRerun}
            f["tasks"], f["attempts"] = states(db, "tasks", job), states(db, "task_attempts", job)
            rows = one(db, "SELECT coalesce(master, '(none)'), count(*) FROM agents GROUP BY 1")
            f["agents"] = dict(sorted(rows))
            f["talkback"], f["masters"] = b.talkback(), b.masters()
            loads.command("finish")
            print("finish: the agents report their tasks done")
            try:
                took = until("the job done", 60 + n / 100,
                             lambda e: committed(db, [job]) >= n and not total(e, "finals_pending"),
                             ms, loads)  # fmt: skip
                f["finish"] = f"job done and every report acknowledged {took:.1f} s later"
            except BenchFailure as e:
                f["finish"] = f"FAIL: {e} ({committed(db, [job])} of {n} done)"
            f["bad"] = one(db, EXACTLY_ONE, (job, job))[0][1]
        f["end"] = loads.each()
    finally:
        loads.quit()
    gone = time.monotonic()
    while b.talkback()["agents_connected"] and time.monotonic() - gone < 60:
        time.sleep(0.5)
    f["gone"] = f"{b.name} let every agent go in {time.monotonic() - gone:.1f} s"
    report(n, f)
    return not any(failures(f["end"]).values()) and not f["finish"].startswith("FAIL")


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="masterd-takeover-bench-"))
    server: Server | None = None
    masters: list[Master] = []
    good = False
    try:
        server = Server(tmp / "pgdata")
        print(f"PostgreSQL (pgserver) pid {server.pg.server.pid}; {args.connections} agents at"
              f" {args.rate:g}/s from {args.processes} generator(s)")  # fmt: skip
        good = measure(args, server, tmp, masters)
    except (BenchFailure, RuntimeError, OSError, psycopg2.Error) as e:
        print(f"FAIL: {e.__class__.__name__}: {e}")
        for m in masters:
            status = "" if m.popen.poll() is None else f" (exited with {m.popen.returncode})"
            print(f"--- tail of {m.log}{status}, less the agents' hellos ---\n{tail(m.log, 20)}")
    finally:
        for m in masters:
            m.stop()
            if m.popen.returncode not in (0, -signal.SIGTERM) and not m.killed:
                print(f"{m.name} exited with status {m.popen.returncode}")
            lines = m.suspicious()
            if lines:
                print(f"{m.name} log: {len(lines)} suspicious lines, e.g.:")
                print("\n".join(lines[:5]))
        if server is not None:
            server.stop()
        stopOrphan(tmp / "pgdata")
        if os.environ.get("MASTERD_BENCH_KEEP"):
            print(f"kept {tmp} (MASTERD_BENCH_KEEP)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"whole benchmark: {time.monotonic() - began:.0f} s")
    return 0 if good else 1
