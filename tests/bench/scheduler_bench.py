"""
Scheduler benchmark: full task lifecycles (assign -> running -> done) per
second through a real master, the scheduling latency, exactly-once from the
database, and the bare SQL of a lifecycle under pgbench as the ceiling.

Run it from the repository root::

    python tests/bench/scheduler_bench.py
        [--case {throughput,production,contention,latency,all}]
        [--agents 200] [--tasks 50000] [--jobs 1000] [--job-tasks 100]
        [--production-jobs 20] [--production-frames 800]
        [--contention-agents 500] [--hold 1] [--latency-tasks 8000] [--duration 30]
        [--pgbench-clients 4,16] [--pgbench-batch 50] [--pgbench-seconds 20]

Each case starts its own master (embedded PostgreSQL; helpers of
talkback_bench.py) as a subprocess, submits its jobs through the API (the
contention case with 4 threads), then starts a load generator
(scheduler_load.py) whose agents (max_tasks 1) answer every assign at once
with running and done. Cases:

 - C{throughput}: C{--agents} agents on one job of C{--tasks} tasks;
 - C{production}: C{--agents} agents on C{--production-jobs} jobs of three
   layers of C{--production-frames} frames (sim; render frame by frame on
   sim; comp frame by frame on render), render and comp holding one limit
   each, the jobs shared by two projects of weights 1 and 2 (target: at
   least 0.8 times the throughput case of the same run);
 - C{contention}: C{--contention-agents} agents on C{--jobs} jobs of
   C{--job-tasks} tasks each;
 - C{latency}: C{--agents} agents on one job of C{--latency-tasks} tasks that
   take C{--hold} s on average (0.5 to 1.5 times that): the farm is not
   saturated, so the time from a free slot to its assign is the scheduler's
   own. In the saturated cases an agent's wait is bounded below by Little's
   law (agents / lifecycles a second), whatever the scheduler does.

After C{--warmup} lifecycles it samples every C{--sample} s for C{--duration}
s (or until the queue nearly runs out): lifecycles/s from the generator's
done messages and the jobs' committed done counts; the latency from an
agent's done to its next assign, p50/p99 (and welcome to first assign); the
CPU of the master, PostgreSQL (every postgres process) and the generator;
statements per lifecycle from C{GET /api/v1/master}. Once every task is done
it checks exactly-once from the database (each done task has exactly one
done attempt, no two attempts of a task or of an agent overlap in time, no
agent was handed a task twice). Then, the agents gone, it runs pgbench on the
same database with the SQL masterd runs for a lifecycle, captured from
masterd's own code (the claim's three statements, the running report, the
done report with its release check): one lifecycle with each step its own
transaction (as masterd commits a lone message), and in one transaction, at
each of C{--pgbench-clients}; then C{--pgbench-batch} lifecycles a step,
set-based as masterd's group commit writes them, at -c 1 (masterd has one
transaction in flight) and -c 2, until their job is done. Each run takes its
tasks from a fresh job.

Targets: >= 2,000 lifecycles/s (aim 3,000); p99 free slot -> assign <= 50 ms;
0 double assignments. A benchmark, not a test: trial does not collect it.
Exit status: 0 once measured (whatever the figures), 1 if the master, the
generator or pgbench fails, or an agent is dropped.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
import psycopg2

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from masterd.scheduler.claims import Capacity, claimMany
from masterd.talkback.messages import TaskUpdate
from masterd.talkback.store import AgentStore
from tests.bench.http_bench import _SUSPICIOUS, freePort, get, stop, twistd, waitFor
from tests.bench.jobs_bench import Client
from tests.bench.talkback_bench import (
    ADMIN,
    CONFIG,
    BenchFailure,
    Loads,
    Postgres,
    cpu,
    idle,
    ramp,
    stopOrphan,
    tail,
    verdict,
)

LOAD = Path(__file__).with_name("scheduler_load.py")
#: The steady lifecycles/s of each case run, for the ratios between cases.
RATES: dict[str, float] = {}
PRODUCTION_TARGET = 0.8
RATE_TARGET, AIM, P99_TARGET = 2000, 3000, 50.0
# Sentinels for capturing masterd's SQL, replaced by pgbench variables.
TASK, JOB, LAYER = 987654321012, 987654321034, 987654321056


class AgentLoads(Loads):
    """
    One scheduler_load.py process (talkback_bench's Loads: stats and quit).
    """

    def __init__(self, port: int, count: int, rate: float, hold: float = 0.0,
                 logs: int = 0, first: int = 0) -> None:  # fmt: skip
        command = [sys.executable, str(LOAD), "--port", str(port), "--count", str(count),
                   "--rate", str(rate), "--hold", str(hold), "--logs", str(logs),
                   "--first", str(first)]  # fmt: skip
        pipe = subprocess.PIPE
        self.procs = [subprocess.Popen(command, stdin=pipe, stdout=pipe, text=True)]
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    def window(self) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write("window\n")
            p.stdin.flush()


def master(port: int) -> dict[str, Any]:
    status, body = get(f"http://127.0.0.1:{port}/api/v1/master", ADMIN, timeout=30)
    if status != 200:
        raise BenchFailure(f"GET /api/v1/master answered {status}: {body[:300]!r}")
    document: dict[str, Any] = json.loads(body)
    return document


def submit(port: int, count: int, frames: str, threads: int = 4) -> list[int]:
    def worker(share: range) -> list[int]:
        client = Client(port)
        try:
            body = {"title": "bench", "command": ["true"], "frames": frames}
            return [client.request("POST", "/api/v1/jobs", body, 201)["id"] for _ in share]
        finally:
            client.close()

    with ThreadPoolExecutor(threads) as pool:
        shares = [range(i, count, threads) for i in range(threads)]
        return [i for part in pool.map(worker, shares) for i in part]


#: The production case: jobs of three layers (sim, render frame by frame on
#: sim, comp frame by frame on render), render and comp each holding a limit,
#: the jobs shared between two projects of weights 1 and 2. The limits' max
#: is above the agents' number: the case measures what limits, frame
#: dependencies and project shares cost, not a farm held back by licences.
PRODUCTION_SETUP = [
    ("PUT", "/api/v1/limits/bench-render", {"max": 100_000}),
    ("PUT", "/api/v1/limits/bench-comp", {"max": 100_000}),
    ("PUT", "/api/v1/projects/bench-a", {"weight": 1}),
    ("PUT", "/api/v1/projects/bench-b", {"weight": 2}),
]


def productionJob(i: int, frames: int) -> dict[str, Any]:
    spec = f"1-{frames}"
    return {
        "title": f"bench shot {i}", "project": "bench-a" if i % 2 else "bench-b",
        "layers": [
            {"name": "sim", "command": ["true"], "frames": spec},
            {"name": "render", "command": ["true"], "frames": spec, "limits": ["bench-render"],
             "depends_on": [{"layer": "sim", "mode": "frame"}]},
            {"name": "comp", "command": ["true"], "frames": spec, "limits": ["bench-comp"],
             "depends_on": [{"layer": "render", "mode": "frame"}]},
        ],
    }  # fmt: skip


def submitProduction(port: int, count: int, frames: int) -> list[int]:
    client = Client(port)
    try:
        for method, path, body in PRODUCTION_SETUP:
            client.request(method, path, body, 201)
        return [client.request("POST", "/api/v1/jobs", productionJob(i, frames), 201)["id"]
                for i in range(count)]  # fmt: skip
    finally:
        client.close()


def layerID(pg: Postgres, job: int) -> int:
    with closing(psycopg2.connect(pg.dsn)) as db, db.cursor() as cursor:
        cursor.execute("SELECT id FROM layers WHERE job_id = %s ORDER BY index LIMIT 1", (job,))
        return int(cursor.fetchone()[0])


def committed(db: Any, ids: list[int]) -> int:
    with db.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(n_done), 0) FROM jobs WHERE id = ANY (%s)", (ids,))
        return int(cursor.fetchone()[0])


def sample(proc: psutil.Process, loads: AgentLoads, pg: Postgres, db: Any, ids: list[int],
           port: int) -> dict[str, Any]:  # fmt: skip
    doc, st = master(port), loads.stats()
    q = doc["database"]
    return {
        "t": time.monotonic(), "cpu": cpu([proc]), "gen": cpu(loads.ps), "pg": pg.cpu(),
        "machine": psutil.cpu_times(), "done": st.get("done", 0), "db": committed(db, ids),
        "queries": q["queries"], "qms": q["queries"] * q["avg_ms"],
        "assigns": doc["talkback"]["messages_out"].get("assign", 0), "stats": st,
    }  # fmt: skip


CHECKS = [
    ("tasks done", "SELECT count(*) FROM tasks WHERE job_id = ANY (%(ids)s) AND state = 'done'"),
    ("done attempts", "SELECT count(*) FROM task_attempts WHERE job_id = ANY (%(ids)s)"
     " AND state = 'done'"),
    ("attempts in all", "SELECT count(*) FROM task_attempts WHERE job_id = ANY (%(ids)s)"),
    ("done tasks without exactly one done attempt", "SELECT count(*) FROM tasks t"
     " WHERE t.job_id = ANY (%(ids)s) AND t.state = 'done' AND (SELECT count(*)"
     " FROM task_attempts a WHERE a.task_id = t.id AND a.state = 'done') <> 1"),
    ("attempts of one task overlapping", "SELECT count(*) FROM task_attempts a"
     " JOIN task_attempts b ON b.task_id = a.task_id AND b.attempt > a.attempt"
     " WHERE a.job_id = ANY (%(ids)s) AND b.started_at < coalesce(a.finished_at, 'infinity')"),
    ("attempts overlapping on one agent (max_tasks 1)", "SELECT count(*) FROM (SELECT"
     " started_at, lag(coalesce(finished_at, 'infinity'), 1, '-infinity') OVER (PARTITION BY"
     " agent_id ORDER BY started_at, task_id) AS previous FROM task_attempts"
     " WHERE job_id = ANY (%(ids)s)) x WHERE started_at < previous"),
]  # fmt: skip


def exactlyOnce(db: Any, ids: list[int], total: int, again: int) -> tuple[int, list[str]]:
    found = {}
    with db.cursor() as cursor:
        for label, sql in CHECKS:
            cursor.execute(sql, {"ids": ids})
            found[label] = int(cursor.fetchone()[0])
    violations = abs(found["tasks done"] - found["done attempts"]) + again + sum(
        v for k, v in found.items() if "overlapping" in k or "without" in k)  # fmt: skip
    lines = [f"{k}: {v}" for k, v in found.items()] + [
        f"tasks an agent was assigned twice: {again}", f"tasks submitted: {total}"]  # fmt: skip
    return violations, lines


def capture(answers: list[Any], run: Any) -> list[tuple[str, Any, list[Any]]]:
    """
    The statements (SQL, parameters) masterd's own code runs, given answers.
    """
    calls: list[tuple[str, Any, list[Any]]] = []

    class Recorder:
        async def query(self, sql: str, params: Any = None) -> list[Any]:
            calls.append((sql, params, answers.pop(0) if answers else []))
            return calls[-1][2]

        async def execute(self, sql: str, params: Any = None) -> None:
            calls.append((sql, params, []))

    try:
        run(Recorder()).send(None)
    except StopIteration:
        return calls
    raise BenchFailure("capturing masterd's SQL: it awaited something else")


def pgbenchScript(db: Any, path: Path, size: int, steps: bool) -> Path:
    """
    A pgbench script of C{size} lifecycles, as masterd's own code writes
    them: the claim for C{size} alike agents, their running reports, their
    done reports; each step its own transaction (C{steps}), or all in one.
    """
    agents = [f"feedface-0000-4000-8000-{i:012x}" for i in range(size)]
    tasks = [TASK + i for i in range(size)]

    def reports(state: str) -> list[tuple[str, TaskUpdate, float | None]]:
        pairs = zip(agents, tasks, strict=True)
        return [(a, TaskUpdate(t, 1, state, None, 0, None), None) for a, t in pairs]

    store = AgentStore(None)  # type: ignore[arg-type]
    captured = [
        capture([[(LAYER, 0, JOB, 50, "bench", 0, 1, 0, 1, None, 0, 0, 0, 0, size, None, 0, [])],
                 [(LAYER, t) for t in tasks]], lambda t: claimMany(
            t, [Capacity(a, 1, 8, 16000, 0, ("linux",)) for a in agents], None)),
        capture([[(t,) for t in tasks]], lambda t: store._applyReports(t, reports("running"))),
        capture([[(t, JOB) for t in tasks]], lambda t: store._applyReports(t, reports("done"))),
    ]  # fmt: skip
    # The tasks the claim locked (pgbench keeps them as text), and agents
    # of this pgbench client.
    swaps = [(f"ARRAY[{','.join(map(str, tasks))}]", "':ids'::bigint[]"),
             (f"ARRAY[{','.join(repr(a) for a in agents)}]",
              "(SELECT array_agg(('00000000-0000-4000-8000-' || lpad((:client_id * 100000 + g)"
              f"::text, 12, '0'))::uuid ORDER BY g) FROM generate_series(1, {size}) g)"),
             (str(JOB), ":job"), (str(LAYER), ":layer")]  # fmt: skip
    texts = []
    with db.cursor() as cursor:
        for calls in captured:
            lines = []
            for sql, params, answer in calls:
                text = cursor.mogrify(sql, params).decode()
                for old, new in swaps:
                    text = text.replace(old, new)
                if answer and answer[0] == (LAYER, TASK):  # the statement that picks the tasks
                    text = f"SELECT array_agg(id)::text AS ids FROM ({text}) l \\gset"
                lines.append(text if text.endswith("gset") else text + ";")
            texts.append("\n".join(lines))
    if any(str(TASK) in t for t in texts):
        raise BenchFailure("a task id of the capture is left in the pgbench script")
    path.write_text("".join(f"BEGIN;\n{t}\nCOMMIT;\n" for t in texts) if steps
                    else "BEGIN;\n" + "\n".join(texts) + "\nCOMMIT;\n")  # fmt: skip
    return path


def pgbench(pg: Postgres, port: int, script: Path, clients: int, tasks: int, size: int,
            seconds: int) -> dict[str, Any]:  # fmt: skip
    """
    One pgbench run on a fresh job of C{tasks} tasks: for C{seconds}, or
    (batched, 0) until the job is done.
    """
    job = submit(port, 1, f"1-{tasks}", 1)[0]
    layer = layerID(pg, job)
    length = ["-T", str(seconds)] if seconds else ["-t", str(tasks // size // clients)]
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.origin is not None
    exe = Path(spec.origin).parent / "pginstall" / "bin" / "pgbench"
    host, pgPort = re.search(r"host=(\S+) port=(\d+)", pg.dsn).groups()  # type: ignore[union-attr]
    command = [str(exe), "-n", "-f", str(script), "-c", str(clients), "-j", str(min(2, clients)),
               *length, "-D", f"job={job}", "-D", f"layer={layer}", "-h", host, "-p", pgPort,
               "-U", "postgres", "masterd"]  # fmt: skip
    pg0, us0, t0 = pg.cpu(), resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        bench = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
        while bench.poll() is None:  # the backends come and go with pgbench
            time.sleep(0.2)
            pg.cpu()
        out.seek(0)
        output = out.read()
    wall, us1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    tps = re.search(r"tps = ([\d.]+) \(without", output)
    latency = re.search(r"latency average = ([\d.]+) ms", output)
    if bench.returncode or tps is None:
        raise BenchFailure(f"pgbench failed ({bench.returncode}): {output[-1500:]}")
    used = us1.ru_utime + us1.ru_stime - us0.ru_utime - us0.ru_stime
    return {"tps": float(tps.group(1)), "ms": float(latency.group(1)) if latency else 0.0,
            "pg": (pg.cpu() - pg0) / wall * 100, "bench": used / wall * 100}  # fmt: skip


def measure(args: argparse.Namespace, port: int, popen: subprocess.Popen[bytes], pg: Postgres,
            db: Any, ids: list[int], total: int, agents: int, hold: float = 0.0,
            warmup: int | None = None) -> dict[str, Any]:  # fmt: skip
    began, proc = time.monotonic(), psutil.Process(popen.pid)
    loads = AgentLoads(port, agents, args.rate, hold, args.logs)
    warmup = args.warmup if warmup is None else warmup
    try:
        print(f"{agents} agents connecting at {args.rate:g}/s")
        ramp(argparse.Namespace(connections=agents, rate=args.rate), popen, loads)
        while (st := loads.stats()).get("done", 0) < warmup:
            if time.monotonic() - began > 300:
                raise BenchFailure(f"only {st.get('done', 0)} lifecycles in 300 s")
            time.sleep(0.2)
        loads.window()
        rows = [sample(proc, loads, pg, db, ids, port)]
        print(f"steady window: up to {args.duration:g} s, a sample every {args.sample:g} s")
        while rows[-1]["t"] - rows[0]["t"] < args.duration - 0.5:
            time.sleep(max(0.0, rows[0]["t"] + len(rows) * args.sample - time.monotonic()))
            rows.append(sample(proc, loads, pg, db, ids, port))
            a, b = rows[-2], rows[-1]
            rate = (b["done"] - a["done"]) / (b["t"] - a["t"])
            print(f"  {b['t'] - rows[0]['t']:5.1f} s: {rate:7.0f} lifecycles/s,"
                  f" {b['done']} of {total} done")  # fmt: skip
            if total - b["done"] - rate * args.sample < 2 * agents:
                break  # the next interval would reach the end of the queue
        waited = time.monotonic()
        while committed(db, ids) < total:
            if time.monotonic() - waited > 600:
                raise BenchFailure(f"{total - committed(db, ids)} tasks not done after 600 s")
            time.sleep(0.2)
        allDone = time.monotonic() - began
        end = loads.stats()
    finally:
        loads.quit()
    violations, checks = exactlyOnce(db, ids, total, end.get("assigned_again", 0))
    return {"rows": rows, "end": end, "all_done": allDone, "violations": violations,
            "checks": checks}  # fmt: skip


def report(case: str, args: argparse.Namespace, m: dict[str, Any], ceiling: dict[str, Any],
           total: int, agents: int) -> None:  # fmt: skip
    rows, end = m["rows"], m["end"]
    print(f"\n{'t s':>5}{'lc/s gen':>10}{'lc/s db':>9}{'master %':>10}{'pg %':>7}{'gen %':>7}"
          f"{'stmts/lc':>9}{'db wait %':>10}")  # fmt: skip
    for a, b in itertools.pairwise(rows):
        dt, lc = b["t"] - a["t"], max(1, b["done"] - a["done"])
        pct = [(b[k] - a[k]) / dt * 100 for k in ("cpu", "pg", "gen")]
        print(f"{b['t'] - rows[0]['t']:5.1f}{lc / dt:10.0f}{(b['db'] - a['db']) / dt:9.0f}"
              f"{pct[0]:10.0f}{pct[1]:7.0f}{pct[2]:7.0f}{(b['queries'] - a['queries']) / lc:9.1f}"
              f"{(b['qms'] - a['qms']) / dt / 10:10.0f}")  # fmt: skip
    first, last = rows[0], rows[-1]
    wall = last["t"] - first["t"]
    rate, dbRate = (last["done"] - first["done"]) / wall, (last["db"] - first["db"]) / wall
    share = {k: (last[k] - first[k]) / wall * 100 for k in ("cpu", "pg", "gen")}
    busy = 1 - (idle(last["machine"]) - idle(first["machine"])) / (
        sum(last["machine"]) - sum(first["machine"]))  # fmt: skip
    free, firstMs, lc = end["free_ms"], end["first_ms"], max(1, last["done"] - first["done"])
    cores = psutil.cpu_count() or 1
    bests = [(f"{n} lc (best)", max((r["rate"] for k, r in ceiling.items()
                                     if k.startswith(f"{n} ")), default=0.0))
             for n in (1, args.pgbench_batch)]  # fmt: skip
    RATES[case] = rate
    print(f"\n== {case}: {agents} agents, {len(m['ids'])} job(s), {total} tasks ==")
    for label, value in [
        ("lifecycles/s (steady window)", f"{rate:.0f} from done messages, {dbRate:.0f} committed,"
                                         f" over {wall:.1f} s" + (
                                         f"   (tasks of {args.hold:g} s on average: not a"
                                         " throughput case)" if case == "latency" else
                                         f"   >= {RATE_TARGET}  {verdict(rate >= RATE_TARGET)}"
                                         f" (aim {AIM}: {verdict(rate >= AIM)})")),
        ("every task done after", f"{m['all_done']:.1f} s from the first connection"
                                  f" ({total / m['all_done']:.0f} lifecycles/s overall)"),
        ("done -> next assign", f"p50 {free[0]:.1f} ms, p90 {free[1]:.1f} ms, p99 {free[2]:.1f}"
                                f" ms, max {free[3]:.0f} ms ({end['free_n']} samples)"
                                f"   p99 <= {P99_TARGET:g} ms  {verdict(free[2] <= P99_TARGET)}"
                                + ("" if case == "latency" else
                                   f" (saturated: {agents} agents at {rate:.0f}/s wait"
                                   f" {agents / max(rate, 1) * 1000:.0f} ms a lifecycle"
                                   " on average, Little's law)")),
        ("welcome -> first assign", f"p50 {firstMs[0]:.1f} ms, p99 {firstMs[2]:.1f} ms,"
                                    f" max {firstMs[3]:.0f} ms ({end['first_n']} agents)"),
        ("CPU, % of one core", f"master {share['cpu']:.0f}, PostgreSQL {share['pg']:.0f},"
                               f" generator {share['gen']:.0f}; machine busy"
                               f" {busy * cores * 100:.0f} of {cores * 100}"),
        ("statements per lifecycle", f"{(last['queries'] - first['queries']) / lc:.2f}"
                                     f" (with BEGIN/COMMIT; the master waited on PostgreSQL"
                                     f" {(last['qms'] - first['qms']) / wall / 10:.0f} % of"
                                     f" the time)"),
        ("tasks per assign message", f"{lc / max(1, last['assigns'] - first['assigns']):.2f}"),
        ("exactly once", f"{m['violations']} violations   0  {verdict(m['violations'] == 0)}"),
        *[("", line) for line in m["checks"]],
        ("agents dropped / errors / cancels", f"{end.get('dropped', 0)} / "
                                              f"{end.get('error_messages', 0)} /"
                                              f" {end.get('cancels', 0)}"),
        *[(f"pgbench {name}", f"{r['rate']:.0f} lifecycles/s ({r['ms']:.2f} ms a script);"
                              f" CPU PostgreSQL {r['pg']:.0f} %, pgbench {r['bench']:.0f} %")
          for name, r in ceiling.items()],
        *[(f"masterd / pgbench {what}", f"{rate / best:.2f}") for what, best in bests if best],
    ]:  # fmt: skip
        print(f"{label:40}{value}")


def startSQLProfile(db: Any) -> None:
    """
    Count time per SQL function, and log a sample of statements with their
    durations (the embedded server logs to pgdata/log).
    """
    with db.cursor() as cursor:
        cursor.execute("ALTER SYSTEM SET track_functions = 'pl'")
        cursor.execute("ALTER SYSTEM SET log_min_duration_sample = 0")
        cursor.execute("ALTER SYSTEM SET log_statement_sample_rate = 0.03")
        cursor.execute("SELECT pg_reload_conf()")
        cursor.execute("SELECT pg_stat_reset()")


def printSQLProfile(db: Any, logFile: Path) -> None:
    with db.cursor() as cursor:
        cursor.execute("SELECT funcname, calls, total_time, self_time FROM"
                       " pg_stat_user_functions ORDER BY self_time DESC LIMIT 10")  # fmt: skip
        print("SQL function                            calls    total ms   own ms")
        for name, calls, total, own in cursor.fetchall():
            print(f"{name:40}{calls:6} {total:10.0f} {own:8.0f}")
    if not logFile.exists():
        return
    spent: dict[str, list[float]] = {}
    text = logFile.read_text(errors="replace")
    for entry in re.split(r"\n(?=\d{4}-\d\d-\d\d )", text):
        m = re.search(r"duration: ([\d.]+) ms\s+(?:statement|execute [^:]*): (.*)", entry, re.S)
        if m is None:
            continue
        shape = re.sub(r"\b\d+\b", "N", re.sub(r"'[^']*'", "?", " ".join(m.group(2).split())))
        shape = re.sub(r"ARRAY\[[^\]]*\]", "ARRAY", shape)[:90]
        spent.setdefault(shape, []).append(float(m.group(1)))
    print("sampled statements: total ms, count, mean ms, statement")
    for shape, times in sorted(spent.items(), key=lambda kv: -sum(kv[1]))[:8]:
        print(f"{sum(times):8.1f} {len(times):5} {sum(times) / len(times):7.2f}  {shape}")


def runCase(args: argparse.Namespace, case: str) -> bool:
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="masterd-scheduler-bench-"))
    masterLog, popen = tmp / "master.log", None
    try:
        port = freePort()
        config = tmp / "master.yaml"
        config.write_text(CONFIG.format(port=port, tmp=tmp, admin=ADMIN) + args.config)
        with masterLog.open("wb") as log:
            popen = subprocess.Popen([twistd(), "-n", "--pidfile=", "masterd", "-c", str(config)],
                                     cwd=tmp, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        startup = waitFor(f"http://127.0.0.1:{port}/readyz", popen, 60.0)
        if case == "throughput":
            count, frames, agents = 1, f"1-{args.tasks}", args.agents
        elif case == "latency":
            count, frames, agents = 1, f"1-{args.latency_tasks}", args.agents
        elif case == "production":
            count, frames, agents = args.production_jobs, "", args.agents
        else:
            count, frames, agents = args.jobs, f"1-{args.job_tasks}", args.contention_agents
        t0 = time.monotonic()
        if case == "production":
            ids = submitProduction(port, count, args.production_frames)
            total = count * 3 * args.production_frames
        else:
            ids = submit(port, count, frames)
            total = count * int(frames[2:])
        took = time.monotonic() - t0
        print(f"\n### case {case}: master ready after {startup:.1f} s (log {masterLog});"
              f" {count} job(s), {total} tasks, submitted in {took:.1f} s")  # fmt: skip
        pg = Postgres(tmp / "pgdata")
        with closing(psycopg2.connect(pg.dsn)) as db:
            db.autocommit = True
            hook = getattr(args, "before_measure", None)
            if hook is not None:  # e.g. retention_bench.py's old job
                hook(port, pg, db)
            if args.sql_profile:
                startSQLProfile(db)
            if case == "latency":
                m = measure(args, port, popen, pg, db, ids, total, agents, args.hold, agents)
            else:
                m = measure(args, port, popen, pg, db, ids, total, agents)
            m["ids"] = ids
            if args.logs:
                with db.cursor() as cursor:
                    cursor.execute("SELECT coalesce(sum(cardinality(lines)), 0) FROM task_logs")
                    stored = int(cursor.fetchone()[0])
                sent = m["end"].get("log_lines", 0)
                rate = stored / m["all_done"]
                m["checks"].append(f"log lines stored: {stored} of {sent} sent"
                                   f" ({rate:.0f} a second over the run)")  # fmt: skip
            if args.sql_profile:
                printSQLProfile(db, tmp / "pgdata" / "log")
            gone = time.monotonic()
            while master(port)["talkback"]["agents_connected"] and time.monotonic() - gone < 60:
                time.sleep(0.2)
            ceiling: dict[str, dict[str, Any]] = {}
            runs = [] if case == "latency" else [
                ("1 lc, 3 txns", 1, True, c) for c in args.pgbench_clients]  # fmt: skip
            runs += [] if case == "latency" else [
                ("1 lc, 1 txn", 1, False, c) for c in args.pgbench_clients]  # fmt: skip
            if args.pgbench_batch > 1 and case != "latency":
                runs += [(f"{args.pgbench_batch} lc, 3 txns", args.pgbench_batch, True, c)
                         for c in (1, 2)]  # fmt: skip
            for name, size, steps, clients in runs:
                script = pgbenchScript(db, tmp / f"lifecycle-{size}-{steps}.sql", size, steps)
                tasks, seconds = (args.pgbench_tasks, args.pgbench_seconds) if size == 1 else (
                    args.pgbench_tasks * 4, 0)  # fmt: skip
                print(f"pgbench: {name}, -c {clients}, {tasks} queued tasks")
                r = pgbench(pg, port, script, clients, tasks, size, seconds)
                ceiling[f"{name}, -c {clients}"] = {**r, "rate": r["tps"] * size}
        report(case, args, m, ceiling, total, agents)
        suspicious = [line for line in masterLog.read_text(errors="replace").splitlines()
                      if _SUSPICIOUS.search(line)]  # fmt: skip
        if suspicious:
            print(f"master log: {len(suspicious)} suspicious lines, e.g.:")
            print("\n".join(suspicious[:10]))
        return not m["end"].get("dropped") and not m["end"].get("failed")
    except (BenchFailure, RuntimeError, OSError, psycopg2.Error) as e:
        print(f"FAIL: {e.__class__.__name__}: {e}")
        if popen is not None and popen.poll() is not None:
            print(f"the master exited with status {popen.returncode}")
        print(f"--- tail of {masterLog} ---\n{tail(masterLog)}")
        return False
    finally:
        stop(popen, 60)
        stopOrphan(tmp / "pgdata")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"case {case}: {time.monotonic() - began:.0f} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    add = parser.add_argument
    add(
        "--case",
        choices=["throughput", "contention", "latency", "production", "all"],
        default="all",
    )
    add("--production-jobs", type=int, default=20, help="jobs of three layers, production"
        " case (20)")  # fmt: skip
    add("--production-frames", type=int, default=800, help="frames of each layer, production"
        " case (800: 20 jobs make 48,000 tasks)")  # fmt: skip
    add("--agents", type=int, default=200, help="agents, throughput case (200)")
    add("--tasks", type=int, default=50_000, help="tasks of the one job (50000)")
    add("--hold", type=float, default=1.0, help="mean task time, latency case, s (1)")
    add("--logs", type=int, default=0, help="log messages of 20 lines each task sends before"
        " its done, every case (0)")  # fmt: skip
    add("--latency-tasks", type=int, default=8000, help="tasks, latency case (8000)")
    add("--contention-agents", type=int, default=500, help="agents, contention case (500)")
    add("--jobs", type=int, default=1000, help="jobs, contention case (1000)")
    add("--job-tasks", type=int, default=100, help="tasks a job, contention case (100)")
    add("--warmup", type=int, default=2000, help="lifecycles before the window (2000)")
    add("--duration", type=float, default=30, help="steady window at most, s (30)")
    add("--sample", type=float, default=2, help="seconds between samples (2)")
    add("--rate", type=float, default=500, help="agent connections a second (500)")
    add("--pgbench-clients", default="4,16", help="pgbench clients, runs of one lifecycle"
        " ('' skips them; 4,16)")  # fmt: skip
    add("--pgbench-seconds", type=int, default=20, help="each run of one lifecycle, s (20)")
    add("--pgbench-tasks", type=int, default=25_000, help="queued tasks a pgbench run of one"
        " lifecycle, 4x as many for the batched runs (25000)")  # fmt: skip
    add("--pgbench-batch", type=int, default=50, help="lifecycles a transaction in the batched"
        " pgbench runs, at -c 1 and 2 (50; 1 skips them)")  # fmt: skip
    add("--config", default="", help="YAML appended to the master's config")
    add("--keep", action="store_true", help="keep the master's directory (log, data)")
    add(
        "--sql-profile",
        action="store_true",
        help="print where PostgreSQL's time went: each SQL function's total and own time"
        " (track_functions) and the costliest statements of a 3 %% sample (slows it)",
    )
    args = parser.parse_args(argv)
    args.pgbench_clients = [int(c) for c in args.pgbench_clients.split(",") if c]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    began = time.monotonic()
    cases = (["throughput", "production", "contention", "latency"] if args.case == "all"
             else [args.case])  # fmt: skip
    good = all([runCase(args, case) for case in cases])
    if "production" in RATES and "throughput" in RATES:
        ratio = RATES["production"] / max(RATES["throughput"], 1.0)
        print(f"production / throughput (same run): {RATES['production']:.0f} /"
              f" {RATES['throughput']:.0f} = {ratio:.2f}   >= {PRODUCTION_TARGET}"
              f"  {verdict(ratio >= PRODUCTION_TARGET)}")  # fmt: skip
    print(f"whole benchmark: {time.monotonic() - began:.0f} s")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
