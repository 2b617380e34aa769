"""
Cluster benchmark: task lifecycles (assign -> running -> done) per second with
one, two and three masters sharing one PostgreSQL, with each master's CPU.

Run it from the repository root::

    python tests/bench/cluster_bench.py [--masters 1,2,3] [--agents 200] [--tasks 30000]
        [--duration 20] [--warmup 2000] [--sample 2] [--rate 500] [--drain 30]
        [--config 'scheduler: {sweep_s: 60}'] [--keep]

It starts one PostgreSQL (pgserver, as the embedded one, in a temporary
directory). Then, for each N of C{--masters}: a fresh database; N masters
(twistd subprocesses, each its own name and loopback port, all with
C{database.dsn} pointing at that database, as in docs/operations.md); one job
of C{--tasks} no-op tasks submitted through the first master's API; and one
load generator (scheduler_load.py) per master, its share of C{--agents}
(max_tasks 1, agent ids not overlapping) connecting to that master only. The
agents answer every assign at once with running and done.

After C{--warmup} lifecycles it samples every C{--sample} s for C{--duration}
s (or until the queue nearly runs out): lifecycles/s from the generators'
done messages and from the job's committed done count; the CPU of each
master, of PostgreSQL (every postgres process) and of the generators, in %
of one core; the latency from an agent's done to its next assign, p50/p99
(the worst generator's); database statements per lifecycle, all masters
together (C{GET /api/v1/master}: fewer, larger batches mean fewer). An
interval ends before the queue runs short, so that its tail is not counted
as steady state. Then it lets the job finish if that takes at most
C{--drain} s at the measured rate, or cancels the rest, and checks
exactly-once from the database over the finished tasks (each done task has
exactly one done attempt, no two attempts of a task or of an agent overlap
in time, no agent was handed a task twice).

Master, PostgreSQL and generators share the machine's cores: on a small
machine the figures are a scaling curve on shared cores, not the capacity
of more hardware. It prints, per N, a table row (plain figures, for
docs/performance.md) and each N's throughput over N=1's. A benchmark, not a
test: trial does not collect it. Exit status: 0 once measured (whatever the
figures), 1 if a master or a generator fails, or an agent is dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
import psycopg2
from psycopg2.extensions import make_dsn

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.http_bench import _SUSPICIOUS, freePort, twistd, waitFor
from tests.bench.jobs_bench import Client
from tests.bench.scheduler_bench import AgentLoads, committed, exactlyOnce, master, submit
from tests.bench.talkback_bench import (
    ADMIN,
    BenchFailure,
    Postgres,
    cpu,
    idle,
    stopOrphan,
    tail,
)

AGENT_TOKEN = "bench-agent-token-0123456789"  # talkback_load.py's
CONFIG = """\
master: {{name: {name}}}
http: {{listen: ["tcp:{port}:interface=127.0.0.1:backlog=1024"], access_log: false}}
database: {{dsn: {dsn}}}
auth:
  tokens:
    - {{name: bench, role: admin, token: {admin}}}
    - {{name: agents, role: agent, token: {agent}}}
"""


def startMaster(config: Path, logPath: Path) -> subprocess.Popen[bytes]:
    """
    C{twistd masterd} on C{config}, in the config's directory, logging to
    C{logPath}.
    """
    # The DSN is in the config: none from the environment overrides it.
    env = {k: v for k, v in os.environ.items() if k != "MASTERD_DATABASE_DSN"}
    with logPath.open("wb") as log:
        return subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "masterd", "-c", str(config)],
            cwd=config.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


class Master:
    """
    One master subprocess on the shared database.
    """

    def __init__(self, tmp: Path, index: int, dsn: str, extra: str) -> None:
        self.name, self.port = f"bench-m{index + 1}", freePort()
        directory = tmp / self.name
        directory.mkdir()
        config = directory / "master.yaml"
        config.write_text(
            CONFIG.format(
                name=self.name, port=self.port, dsn=json.dumps(dsn), admin=ADMIN, agent=AGENT_TOKEN
            )
            + extra
        )
        self.log = directory / "master.log"
        self.popen = startMaster(config, self.log)
        self.proc = psutil.Process(self.popen.pid)

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise BenchFailure(f"master {self.name} exited with status {self.popen.returncode}")

    def suspicious(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if _SUSPICIOUS.search(line)]


class Server:
    """
    The one PostgreSQL all masters share: pgserver in C{pgdata}.
    """

    def __init__(self, pgdata: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs, without XDG_RUNTIME_DIR
            from pgserver.postgres_server import get_server

            self.server = get_server(pgdata, cleanup_mode="stop")
        info = self.server.get_postmaster_info()
        self.admin = make_dsn(
            host=str(info.socket_dir), port=info.port or 5432, user="postgres", dbname="postgres"
        )
        self.pg = Postgres(pgdata)

    def sql(self, statement: str) -> None:
        with closing(psycopg2.connect(self.admin)) as conn:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(statement)

    def create(self, name: str) -> str:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.sql(f"CREATE DATABASE {name}")
        return make_dsn(self.admin, dbname=name)

    def stop(self) -> None:
        self.server.cleanup()


def spread(total: int, parts: int) -> list[tuple[int, int]]:
    """
    C{total} agents in C{parts} shares: (count, first index) each.
    """
    return [
        (total // parts + (i < total % parts), i * (total // parts) + min(i, total % parts))
        for i in range(parts)
    ]


def checkAll(masters: list[Master], gens: list[AgentLoads]) -> list[dict[str, Any]]:
    """
    Every master and generator alive; the generators' counters, one each.
    """
    for m in masters:
        m.check()
    stats = [g.stats() for g in gens]
    for m, st in zip(masters, stats, strict=True):
        if st.get("dropped") or st.get("failed"):
            raise BenchFailure(
                f"agents of {m.name}: {st.get('dropped', 0)} dropped,"
                f" {st.get('failed', 0)} failed; {st.get('first_error')}"
            )
    return stats


def sample(
    masters: list[Master], gens: list[AgentLoads], pg: Postgres, db: Any, ids: list[int]
) -> dict[str, Any]:
    stats = checkAll(masters, gens)
    return {
        "t": time.monotonic(),
        "masters": [cpu([m.proc]) for m in masters],
        "gen": cpu([p for g in gens for p in g.ps]),
        "pg": pg.cpu(),
        "machine": psutil.cpu_times(),
        "done": sum(s.get("done", 0) for s in stats),
        "each": [s.get("done", 0) for s in stats],
        "db": committed(db, ids),
        "stats": stats,
    }


def one(db: Any, sql: str, params: Any = None) -> list[Any]:
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def measure(args: argparse.Namespace, server: Server, tmp: Path, n: int) -> dict[str, Any]:
    """
    One run with C{n} masters on a fresh database; its figures.
    """
    dsn = server.create(f"masterd_cluster_{n}")
    masters: list[Master] = []
    gens: list[AgentLoads] = []
    began = time.monotonic()
    try:
        (tmp / f"n{n}").mkdir()
        for i in range(n):
            masters.append(Master(tmp / f"n{n}", i, dsn, args.config))
        for m in masters:
            waitFor(f"http://127.0.0.1:{m.port}/readyz", m.popen, 90.0)
        startup = time.monotonic() - began
        ids = submit(masters[0].port, 1, f"1-{args.tasks}", 1)
        total = args.tasks
        print(
            f"\n### {n} master(s) ready after {startup:.1f} s (ports"
            f" {', '.join(str(m.port) for m in masters)}; logs in {tmp / f'n{n}'});"
            f" job {ids[0]} of {total} tasks submitted through {masters[0].name}"
        )
        with closing(psycopg2.connect(dsn)) as db:
            db.autocommit = True
            gens = [
                AgentLoads(m.port, count, args.rate / n, first=first)
                for m, (count, first) in zip(masters, spread(args.agents, n), strict=True)
            ]
            deadline = time.monotonic() + args.agents / args.rate * 3 + 60
            while sum(s.get("welcomed", 0) for s in checkAll(masters, gens)) < args.agents:
                if time.monotonic() > deadline:
                    raise BenchFailure(
                        f"not every agent was welcomed within {deadline - began:.0f} s"
                    )
                time.sleep(0.2)
            held = dict(one(db, "SELECT master, count(*) FROM agents GROUP BY master"))
            print(
                f"{args.agents} agents welcomed after {time.monotonic() - began:.1f} s;"
                f" held (agents.master): {json.dumps(held, sort_keys=True)}"
            )
            welcomed = time.monotonic()
            while (done := sum(s.get("done", 0) for s in checkAll(masters, gens))) < args.warmup:
                if time.monotonic() - began > 300:
                    raise BenchFailure(f"only {done} lifecycles in 300 s")
                time.sleep(0.2)
            for g in gens:
                g.window()
            before = [master(m.port) for m in masters]
            rows = [sample(masters, gens, server.pg, db, ids)]
            rate = rows[0]["done"] / (rows[0]["t"] - welcomed)  # the warmup's, to begin with
            print(f"steady window: up to {args.duration:g} s, a sample every {args.sample:g} s")
            while rows[-1]["t"] - rows[0]["t"] < args.duration - 0.5:
                # An interval ends before the queue runs short: its tail is no steady state.
                step = min(args.sample, (total - rows[-1]["done"] - 2 * args.agents) / rate - 0.5)
                if step < 0.5:
                    break
                time.sleep(max(0.0, rows[-1]["t"] + step - time.monotonic()))
                rows.append(sample(masters, gens, server.pg, db, ids))
                a, b = rows[-2], rows[-1]
                dt = b["t"] - a["t"]
                rate = max(1.0, (b["done"] - a["done"]) / dt)
                cpus = " ".join(
                    f"{(y - x) / dt * 100:3.0f}"
                    for x, y in zip(a["masters"], b["masters"], strict=True)
                )
                print(
                    f"  {b['t'] - rows[0]['t']:5.1f} s: {rate:6.0f} lifecycles/s"
                    f" ({(b['db'] - a['db']) / dt:6.0f} committed), masters CPU % {cpus},"
                    f" PostgreSQL {(b['pg'] - a['pg']) / dt * 100:3.0f} %;"
                    f" {b['db']} of {total} done"
                )
            if len(rows) < 2:
                raise BenchFailure("the queue ran out before a steady window: raise --tasks")
            docs = [master(m.port) for m in masters]  # right after the window's last sample
            queries = sum(d["database"]["queries"] for d in docs) - sum(
                d["database"]["queries"] for d in before
            )
            first, last = rows[0], rows[-1]
            wall = last["t"] - first["t"]
            rate = (last["db"] - first["db"]) / wall
            remaining = total - committed(db, ids)
            finish = "every task done"
            if remaining > rate * args.drain:
                client = Client(masters[0].port)
                try:
                    client.request("POST", f"/api/v1/jobs/{ids[0]}/cancel", None, 200)
                finally:
                    client.close()
                finish = f"{remaining} tasks canceled after the window"
                print(f"{remaining} tasks left: job canceled")
                waited = time.monotonic()
                openSQL = (
                    "SELECT count(*) FROM task_attempts WHERE job_id = ANY (%s)"
                    " AND finished_at IS NULL"
                )
                while one(db, openSQL, (ids,))[0][0] and time.monotonic() - waited < 30:
                    time.sleep(0.2)
                left = one(db, openSQL, (ids,))[0][0]
                if left:
                    finish += f"; {left} attempts still open 30 s later"
            else:
                waited = time.monotonic()
                while (done := committed(db, ids)) < total:
                    if time.monotonic() - waited > max(60.0, 3 * args.drain):
                        raise BenchFailure(
                            f"{total - done} tasks not done after {time.monotonic() - waited:.0f} s"
                        )
                    checkAll(masters, gens)
                    time.sleep(0.2)
                finish += f" {time.monotonic() - began:.1f} s after the masters were ready"
            end = checkAll(masters, gens)
            for g in gens:
                g.quit()
            gens = []
            again = sum(s.get("assigned_again", 0) for s in end)
            violations, checks = exactlyOnce(db, ids, total, again)
            retried = one(
                db,
                "SELECT count(*) FROM (SELECT task_id FROM task_attempts"
                " WHERE job_id = ANY (%s) GROUP BY task_id HAVING count(*) > 1) x",
                (ids,),
            )[0][0]
            checks.append(f"tasks with more than one attempt: {retried}")
        return {
            "n": n,
            "rows": rows,
            "queries": queries,
            "docs": docs,
            "end": end,
            "finish": finish,
            "violations": violations,
            "checks": checks,
            "held": held,
            "masters": [m.name for m in masters],
        }
    except BaseException:
        for m in masters:
            if m.popen.poll() is not None:
                continue  # its tail follows, with its status
            print(f"--- tail of {m.log} (less the agents' hellos) ---\n{tail(m.log, 15)}")
        raise
    finally:
        for g in gens:
            g.quit()
        for m in masters:  # all at once, then wait for each
            if m.popen.poll() is None:
                m.popen.send_signal(signal.SIGTERM)
        for m in masters:
            try:
                m.popen.wait(60)
            except subprocess.TimeoutExpired:
                print(f"{m.name} ignored SIGTERM for 60 s; killing it")
                m.popen.kill()
                m.popen.wait()
        clean = (0, -signal.SIGTERM)  # twistd ends itself with the signal it stopped on
        bad = [(m, m.popen.returncode) for m in masters if m.popen.returncode not in clean]
        for m, code in bad:
            print(f"master {m.name} exited with status {code}; tail of {m.log}:\n{tail(m.log)}")
        for m in masters:
            lines = m.suspicious()
            if lines:
                print(f"{m.name} log: {len(lines)} suspicious lines, e.g.:")
                print("\n".join(lines[:5]))
        try:
            server.sql(f"DROP DATABASE IF EXISTS masterd_cluster_{n} WITH (FORCE)")
        except psycopg2.Error as e:
            print(f"dropping the database of N={n}: {e}")
        print(f"N={n}: {time.monotonic() - began:.0f} s")


def figures(m: dict[str, Any]) -> dict[str, Any]:
    rows = m["rows"]
    first, last = rows[0], rows[-1]
    wall = last["t"] - first["t"]
    per = [(b - a) / wall * 100 for a, b in zip(first["masters"], last["masters"], strict=True)]
    busy = 1 - (idle(last["machine"]) - idle(first["machine"])) / (
        sum(last["machine"]) - sum(first["machine"])
    )
    stats = last["stats"]  # latencies of the window only, not of the queue's tail
    return {
        "n": m["n"],
        "wall": wall,
        "samples": len(rows) - 1,
        "rate": (last["done"] - first["done"]) / wall,
        "db": (last["db"] - first["db"]) / wall,
        "each": [(b - a) / wall for a, b in zip(first["each"], last["each"], strict=True)],
        "cpu": per,
        "masters": sum(per),
        "pg": (last["pg"] - first["pg"]) / wall * 100,
        "gen": (last["gen"] - first["gen"]) / wall * 100,
        "busy": busy * (psutil.cpu_count() or 1) * 100,
        "p50": max(s["free_ms"][0] for s in stats),
        "p99": max(s["free_ms"][2] for s in stats),
        "lat": [(s["free_ms"][0], s["free_ms"][2], s["free_n"]) for s in stats],
        "violations": m["violations"],
        "stmts": m["queries"] / max(1, last["done"] - first["done"]),
    }


def details(args: argparse.Namespace, m: dict[str, Any], f: dict[str, Any]) -> None:
    end = m["end"]
    print(f"\n== {f['n']} master(s) ==")
    for label, value in [
        (
            "steady window",
            f"{f['wall']:.1f} s, {f['samples']} samples"
            + (
                ""
                if f["wall"] > args.duration - 1
                else f" (of {args.duration:g} s asked: the queue ran out; more --tasks)"
            ),
        ),
        ("lifecycles/s", f"{f['rate']:.0f} from done messages, {f['db']:.0f} committed"),
        (
            "statements per lifecycle",
            f"{f['stmts']:.2f} (all masters, with BEGIN/COMMIT; GET /api/v1/master)",
        ),
        (
            "per master, lifecycles/s",
            ", ".join(f"{name} {r:.0f}" for name, r in zip(m["masters"], f["each"], strict=True)),
        ),
        ("agents held (agents.master)", json.dumps(m["held"], sort_keys=True)),
        (
            "agents connected (API)",
            ", ".join(
                f"{name} {d['talkback']['agents_connected']}"
                for name, d in zip(m["masters"], m["docs"], strict=True)
            ),
        ),
        (
            "CPU, % of one core",
            f"masters {' + '.join(f'{c:.0f}' for c in f['cpu'])}"
            f" = {f['masters']:.0f}, PostgreSQL {f['pg']:.0f},"
            f" generators {f['gen']:.0f}; machine busy {f['busy']:.0f} of"
            f" {(psutil.cpu_count() or 1) * 100}, of which other processes"
            f" {max(0.0, f['busy'] - f['masters'] - f['pg'] - f['gen']):.0f}",
        ),
        (
            "done -> next assign, ms",
            "; ".join(
                f"{name} p50 {p50:.1f} p99 {p99:.1f} ({k})"
                for name, (p50, p99, k) in zip(m["masters"], f["lat"], strict=True)
            ),
        ),
        ("after the window", m["finish"]),
        ("exactly once", f"{m['violations']} violations"),
        *[("", line) for line in m["checks"]],
        (
            "dropped / errors / cancels",
            f"{sum(s.get('dropped', 0) for s in end)} /"
            f" {sum(s.get('error_messages', 0) for s in end)} /"
            f" {sum(s.get('cancels', 0) for s in end)}",
        ),
        (
            "unhandled exceptions (API)",
            ", ".join(
                f"{name} {d['exceptions']['total']}"
                for name, d in zip(m["masters"], m["docs"], strict=True)
            ),
        ),
    ]:
        print(f"{label:30}{value}")


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    cores = psutil.cpu_count() or 1
    print(
        f"\n{args.agents} agents in all, one job of {args.tasks} no-op tasks; {cores} cores"
        f" shared by masters, PostgreSQL and generators; CPU in % of one core;"
        f" latency done -> next assign, the worst generator's\n"
    )
    print(
        "| masters | lifecycles/s | committed/s | CPU per master % | masters CPU % |"
        " PostgreSQL CPU % | generators CPU % | machine busy % | p50 / p99 ms | stmts / lc |"
        " double assignments | vs 1 master |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = next((f["rate"] for f in results if f["n"] == 1), None)
    for f in results:
        ratio = f"{f['rate'] / base:.2f}" if base else "-"
        print(
            f"| {f['n']} | {f['rate']:.0f} | {f['db']:.0f} |"
            f" {', '.join(f'{c:.0f}' for c in f['cpu'])} | {f['masters']:.0f} |"
            f" {f['pg']:.0f} | {f['gen']:.0f} | {f['busy']:.0f} |"
            f" {f['p50']:.0f} / {f['p99']:.0f} | {f['stmts']:.2f} | {f['violations']} | {ratio} |"
        )
    if base:
        print(
            "\nthroughput / 1 master's: "
            + ", ".join(f"N={f['n']} {f['rate'] / base:.2f}" for f in results)
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    add = parser.add_argument
    add("--masters", default="1,2,3", help="numbers of masters, one run each (1,2,3)")
    add("--agents", type=int, default=200, help="agents in all, split over the masters (200)")
    add("--tasks", type=int, default=30_000, help="tasks of the one job, each run (30000)")
    add("--warmup", type=int, default=2000, help="lifecycles before the window (2000)")
    add("--duration", type=float, default=20, help="steady window at most, s (20)")
    add("--sample", type=float, default=2, help="seconds between samples (2)")
    add("--rate", type=float, default=500, help="agent connections a second, in all (500)")
    add(
        "--drain",
        type=float,
        default=30,
        help="after the window, let the job finish if that"
        " takes at most this many seconds at the measured rate, else cancel the rest (30)",
    )
    add("--config", default="", help="YAML appended to every master's config")
    add("--keep", action="store_true", help="keep the directory (logs, PostgreSQL data)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.masters.split(",") if c]
    if not counts or min(counts) < 1 or args.agents < max(counts):
        parser.error("--masters needs numbers >= 1, and --agents at least the largest")
    if args.tasks < args.warmup + 4 * args.agents:
        parser.error("--tasks must leave a queue after the warmup: >= --warmup + 4 x --agents")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="masterd-cluster-bench-"))
    server: Server | None = None
    results: list[dict[str, Any]] = []
    good = True
    try:
        server = Server(tmp / "pgdata")
        print(f"PostgreSQL (pgserver) pid {server.pg.server.pid}, data in {tmp / 'pgdata'}")
        for n in counts:
            try:
                m = measure(args, server, tmp, n)
            except (BenchFailure, RuntimeError, OSError, psycopg2.Error) as e:
                print(f"FAIL with {n} master(s): {e.__class__.__name__}: {e}")
                good = False
                continue
            f = figures(m)
            details(args, m, f)
            results.append(f)
            good &= not any(s.get("dropped") or s.get("failed") for s in m["end"])
        if results:
            table(results, args)
    except (BenchFailure, RuntimeError, OSError, psycopg2.Error) as e:
        print(f"FAIL: {e.__class__.__name__}: {e}")
        good = False
    finally:
        if server is not None:
            server.stop()
        stopOrphan(tmp / "pgdata")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"whole benchmark: {time.monotonic() - began:.0f} s")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
