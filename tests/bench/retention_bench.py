"""
Retention benchmark (issue 17; docs/retention.md): the database's growth per
1,000,000 finished tasks of 20 log lines each, before and after log
compression; retention's deletion rate (tasks a second) and its effect on the
throughput case of scheduler_bench.py running at the same time.

Run it from the repository root::

    python tests/bench/retention_bench.py [--part {growth,deletion,all}]
        [--tasks 1000000] [--job-frames 100000] [--compress-timeout 1800]
        [--delete-tasks 100000] [--rounds 2] [--due {warmup,insert}]
        [--log-ms 20] [--duty 0.5] [--scheduler-args="--duration 30 ..."] [--keep]

Part C{growth}: a master (embedded PostgreSQL; helpers of talkback_bench.py
and http_bench.py) with C{retention: {compress_logs: false}}, so that no
retention runs. C{--tasks} tasks are submitted as paused jobs of
C{--job-frames} frames through the API, then finished by set-based SQL over
a direct connection (two at a time): each task done with one done attempt
(an hour or two ago, 50 attempts sharing a finished_at as a group commit
writes them, one of 200 agents, usage reported) and one task_logs row of 20
lines of render-log text (a "Read blend" line, 18 "Fra:... | Sample n/128"
lines with varying figures, a "Saved" line: what an agent's one log message
of 20 lines stores). The jobs must end up done (the counts trigger). After
VACUUM ANALYZE it reads pg_total_relation_size of tasks, task_attempts,
task_logs and task_logs_packed and the database's growth since the master
came up empty (pg_database_size). Then the master restarts with
C{retention: {compress_logs: true, interval_s: 1}} and the benchmark polls
until every attempt's log is packed: the compression rate (attempts and
lines a second, from the master's readiness to the last attempt packed),
the sizes after (after VACUUM ANALYZE: the dead rows' space is reusable but
not given back; then after VACUUM FULL task_logs: given back), the log bytes
a task before and after and their ratio, and that a few logs read the same
through GET /api/v1/tasks/{id}/log before and after. With fewer than
1,000,000 tasks the figures per 1,000,000 are scaled linearly (it says so).

Part C{deletion}: scheduler_bench.py's throughput case (its own parser and
defaults; C{--scheduler-args} adds to them; the pgbench ceiling runs are
left out by default) run C{--rounds} times as a pair: a baseline, then a
run with C{retention: {jobs_days: 1, interval_s: 1, max_lock_ms: 200,
compress_logs: false, duty: DUTY}} (C{--duty}, 0.5) where, through
scheduler_bench's C{before_measure} hook (once the master is up, before the
agents connect), a finished job of C{--delete-tasks} tasks (one attempt and
20 log lines each, finished 3 days ago) is inserted. With C{--due warmup}
(the default) the job's own finished_at is set 3 days back once the
throughput job has committed scheduler_bench's C{--warmup} lifecycles, i.e.
as its steady window opens, so that the deletion overlaps the measurement;
with C{--due insert} it is due at once. A thread polls the old job's task
count every 0.5 s: deletion rate = tasks / (first poll with none left -
last poll with all of them), and the throughput job's committed
lifecycles/s meanwhile. PostgreSQL logs every statement of C{--log-ms} or
more (log_min_duration_statement): the longest of retention's statements is
printed (statements, not transactions; a shorter one is not seen). Then the
steady lifecycles/s of each run and the ratio with / without retention
(target: within 10 %, >= 0.9); and, since the deletion may cover only part
of the window, the committed lifecycles/s over the very seconds each
deletion took (from the window's opening) against the baselines' over the
same seconds (each baseline runs the same watch, without a job). The
defaults take about 8 to 9 minutes on a 2-core machine (growth 6, deletion
2).

A benchmark, not a test: trial does not collect it, and it asserts nothing
on timing. Exit status: 0 once measured (whatever the figures), 1 if the
master fails, the jobs do not end up done, a log reads back differently,
compression or a scheduler run fails.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import itertools
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench import scheduler_bench
from tests.bench.http_bench import _SUSPICIOUS, freePort, get, stop, twistd, waitFor
from tests.bench.jobs_bench import Client
from tests.bench.talkback_bench import (
    ADMIN,
    CONFIG,
    BenchFailure,
    Postgres,
    stopOrphan,
    tail,
    verdict,
)

MILLION = 1_000_000
RATIO_TARGET = 0.9
TABLES = ("tasks", "task_attempts", "task_logs", "task_logs_packed")
NO_RETENTION = "retention: {compress_logs: false}\n"
COMPRESS = "retention: {compress_logs: true, interval_s: 1}\n"
DELETE = (
    "retention: {{jobs_days: 1, interval_s: 1, max_lock_ms: 200, compress_logs: false,"
    " duty: {duty}}}\n"
)
SCHEDULER_ARGS = "--duration 30 --pgbench-clients= --pgbench-batch 1"
LINES = 20

# A paused job's tasks finished as agents would have left them: one done
# attempt each, 50 sharing a finished_at (a group commit), spread from
# {base} on; one of 200 agents (none of scheduler_load's ids); the usage an
# agent reports. The job's counts follow by its trigger (done, finished_at
# now); {finished}, when not NULL, then sets the job's finished_at.
FINISH = """
UPDATE tasks SET state = 'done', attempt = 1, progress = 1, exit_code = 0,
    agent_id = ('bbbbbbbb-0000-4000-8000-' || lpad((index % 200)::text, 12, '0'))::uuid,
    finished_at = {base} + (index / 50) * interval '50 milliseconds',
    started_at = {base} + (index / 50) * interval '50 milliseconds'
        - (20 + id % 40) * interval '1 second'
WHERE job_id = {job};
INSERT INTO task_attempts (task_id, attempt, job_id, agent_id, state, started_at, finished_at,
    exit_code, wall_s, cpu_user_s, cpu_system_s, peak_rss_kb)
SELECT id, 1, job_id, agent_id, 'done', started_at, finished_at, 0,
    extract(epoch FROM finished_at - started_at), 60 + id % 300, 2 + id % 5,
    1500000 + id % 400000
FROM tasks WHERE job_id = {job};
INSERT INTO task_logs (task_id, attempt, first_line, lines, at)
SELECT t.id, 1, 0, ARRAY(
    SELECT CASE g
        WHEN 1 THEN format('Read blend: "/projects/show/sq%s/sh%s/lighting_v%s.blend"',
            lpad((t.job_id % 40)::text, 3, '0'), lpad((t.index % 997)::text, 4, '0'),
            1 + t.id % 23)
        WHEN 20 THEN format('Saved: ''/renders/show/sh%s/beauty.%s.exr''  Time: 00:%s'
            ' (Saving: 00:00.%s)', lpad((t.index % 997)::text, 4, '0'),
            lpad(t.frames[1]::text, 4, '0'), to_char(30 + random() * 29, 'FM00.00'),
            lpad((random() * 99)::int::text, 2, '0'))
        ELSE format('Fra:%s Mem:%sM (Peak %sM) | Time:00:%s | Remaining:00:%s | Mem:%sM,'
            ' Peak:%sM | Scene, ViewLayer | Sample %s/128', t.frames[1],
            to_char(900 + random() * 300, 'FM9990.00'), to_char(1400 + random() * 300,
            'FM9990.00'), to_char(g * 1.6 + random(), 'FM00.00'),
            to_char((20 - g) * 1.6 + random(), 'FM00.00'), to_char(400 + random() * 200,
            'FM990.00'), to_char(700 + random() * 100, 'FM990.00'), (g - 1) * 7)
    END FROM generate_series(1, {lines}) g), t.finished_at
FROM tasks t WHERE t.job_id = {job};
UPDATE jobs SET finished_at = coalesce({finished}, finished_at) WHERE id = {job};
"""


# -- helpers -------------------------------------------------------------------


def startMaster(tmp: Path, retention: str, name: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """
    A master on C{tmp}'s embedded PostgreSQL (kept between starts) with
    C{retention} as its retention section; its log C{tmp/name.log}.
    """
    port = freePort()
    config = tmp / f"{name}.yaml"
    config.write_text(CONFIG.format(port=port, tmp=tmp, admin=ADMIN) + retention)
    masterLog = tmp / f"{name}.log"
    with masterLog.open("wb") as log:
        popen = subprocess.Popen([twistd(), "-n", "--pidfile=", "masterd", "-c", str(config)],
                                 cwd=tmp, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        startup = waitFor(f"http://127.0.0.1:{port}/readyz", popen, 120.0)
    except RuntimeError:
        print(f"--- tail of {masterLog} ---\n{tail(masterLog)}")
        stop(popen, 60)
        raise
    print(f"master {name} ready after {startup:.1f} s ({retention.strip()}; log {masterLog})")
    return popen, port, masterLog


def stopMaster(popen: subprocess.Popen[bytes] | None, tmp: Path) -> None:
    stop(popen, 120)
    stopOrphan(tmp / "pgdata")


def suspicious(masterLog: Path) -> None:
    lines = [line for line in masterLog.read_text(errors="replace").splitlines()
             if _SUSPICIOUS.search(line)]  # fmt: skip
    if lines:
        print(f"{masterLog.name}: {len(lines)} suspicious lines, e.g.:")
        print("\n".join(lines[:10]))


def submitPaused(port: int, sizes: list[int], title: str, threads: int = 2) -> list[int]:
    """
    Paused jobs of C{sizes} frames each, through the API.
    """

    def one(size: int) -> int:
        client = Client(port, timeout=600)
        try:
            body = {"title": title, "command": ["true"], "frames": f"1-{size}", "paused": True}
            return int(client.request("POST", "/api/v1/jobs", body, 201)["id"])
        finally:
            client.close()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, sizes))


def finishJob(dsn: str, job: int, base: str, finished: str = "NULL") -> None:
    """
    C{job}'s tasks done, with their attempts and logs, in one transaction.
    """
    with closing(psycopg2.connect(dsn)) as db:
        with db.cursor() as cursor:
            cursor.execute(FINISH.format(job=int(job), base=base, finished=finished, lines=LINES))
        db.commit()


def finishJobs(dsn: str, jobs: list[int], bases: list[str], threads: int = 2) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda jb: finishJob(dsn, *jb), zip(jobs, bases, strict=True)))


def checkDone(db: Any, jobs: list[int], sizes: list[int]) -> None:
    """
    The counts trigger's outcome: each job done, every task counted done.
    """
    with db.cursor() as cursor:
        cursor.execute("SELECT id, state, n_total, n_done, finished_at IS NOT NULL FROM jobs"
                       " WHERE id = ANY (%s) ORDER BY id", (jobs,))  # fmt: skip
        rows = {r[0]: r[1:] for r in cursor.fetchall()}
    for job, size in zip(jobs, sizes, strict=True):
        state, total, done, finished = rows.get(job, (None, 0, 0, False))
        if (state, total, done, finished) != ("done", size, size, True):
            raise BenchFailure(f"job {job}: state {state}, {done} of {total} done (expected"
                               f" {size}), finished_at set: {finished}")  # fmt: skip


def sizes(db: Any) -> dict[str, int]:
    with db.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f"pg_total_relation_size('{t}')" for t in TABLES)
                       + ", pg_database_size(current_database())")  # fmt: skip
        found = cursor.fetchone()
    return dict(zip([*TABLES, "database"], map(int, found), strict=True))


def vacuum(db: Any, what: str = "") -> float:
    began = time.monotonic()
    with db.cursor() as cursor:
        cursor.execute(f"VACUUM {what}".strip())
    return time.monotonic() - began


def readLogs(port: int, tasks: list[int]) -> dict[int, bytes]:
    found = {}
    for task in tasks:
        status, body = get(f"http://127.0.0.1:{port}/api/v1/tasks/{task}/log", ADMIN, timeout=30)
        if status != 200:
            raise BenchFailure(f"GET /api/v1/tasks/{task}/log answered {status}: {body[:200]!r}")
        found[task] = body
    return found


def mb(n: float) -> str:
    return f"{n / 2**20:10.1f}"


# -- part 1: growth and compression --------------------------------------------


def growth(args: argparse.Namespace) -> bool:
    tmp = Path(tempfile.mkdtemp(prefix="masterd-retention-bench-"))
    popen = None
    began = time.monotonic()
    try:
        print(f"\n### growth: {args.tasks} finished tasks of {LINES} log lines each ({tmp})")
        popen, port, firstLog = startMaster(tmp, NO_RETENTION, "master-1")
        pg = Postgres(tmp / "pgdata")
        with closing(psycopg2.connect(pg.dsn)) as db:
            db.autocommit = True
            empty = sizes(db)["database"]
            counts = [min(args.job_frames, args.tasks - i)
                      for i in range(0, args.tasks, args.job_frames)]  # fmt: skip
            t0 = time.monotonic()
            jobs = submitPaused(port, counts, "retention bench")
            t1 = time.monotonic()
            print(f"submitted {len(jobs)} paused job(s), {args.tasks} tasks, in {t1 - t0:.1f} s"
                  f" ({args.tasks / (t1 - t0):.0f} tasks/s)")  # fmt: skip
            # Job k's attempts ended from 1 h 50 min ago on, 2 minutes apart.
            bases = [f"now() - interval '110 minutes' + {k * 2} * interval '1 minute'"
                     for k in range(len(jobs))]  # fmt: skip
            finishJobs(pg.dsn, jobs, bases)
            t2 = time.monotonic()
            checkDone(db, jobs, counts)
            print(f"finished them by SQL (done, one attempt, {LINES} lines each) in"
                  f" {t2 - t1:.1f} s ({args.tasks / (t2 - t1):.0f} tasks/s, 2 connections);"
                  f" every job done")  # fmt: skip
            with db.cursor() as cursor:
                cursor.execute("SELECT count(*), coalesce(sum(cardinality(lines)), 0),"
                               " coalesce(sum(octet_length(array_to_string(lines, E'\\n'))"
                               " + cardinality(lines)), 0) FROM task_logs")  # fmt: skip
                logRows, lineCount, textBytes = map(int, cursor.fetchone())
                cursor.execute("SELECT id FROM tasks WHERE job_id = ANY (%s) ORDER BY"
                               " random() LIMIT 5", (jobs,))  # fmt: skip
                samples = [r[0] for r in cursor.fetchall()]
            if (logRows, lineCount) != (args.tasks, args.tasks * LINES):
                raise BenchFailure(f"{logRows} log rows, {lineCount} lines")
            logsBefore = readLogs(port, samples)
            took = vacuum(db, "ANALYZE")
            before = sizes(db)
            print(f"VACUUM ANALYZE: {took:.1f} s")
        stopMaster(popen, tmp)
        popen = None
        suspicious(firstLog)

        popen, port, secondLog = startMaster(tmp, COMPRESS, "master-2")
        ready = time.monotonic()
        pg = Postgres(tmp / "pgdata")
        with closing(psycopg2.connect(pg.dsn)) as db:
            db.autocommit = True
            first = packed = 0
            firstAt = lastAt = None
            shown = ready
            while packed < args.tasks:
                if time.monotonic() - ready > args.compress_timeout:
                    raise BenchFailure(f"only {packed} of {args.tasks} attempts packed after"
                                       f" {args.compress_timeout:g} s")  # fmt: skip
                if popen.poll() is not None:
                    raise BenchFailure(f"the master exited with status {popen.returncode}")
                time.sleep(1.0)
                with db.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM task_logs_packed")
                    now, packed = time.monotonic(), int(cursor.fetchone()[0])
                if packed and firstAt is None:
                    firstAt, first = now, packed
                if packed >= args.tasks:
                    lastAt = now
                if now - shown >= 10:
                    shown = now
                    print(f"  {now - ready:6.1f} s: {packed} of {args.tasks} attempts packed")
            assert firstAt is not None and lastAt is not None
            with db.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM task_logs")
                left = int(cursor.fetchone()[0])
                cursor.execute("SELECT coalesce(sum(line_count), 0) FROM task_logs_packed")
                packedLines = int(cursor.fetchone()[0])
            if left or packedLines != lineCount:
                raise BenchFailure(f"after compression: {left} task_logs rows left,"
                                   f" {packedLines} of {lineCount} lines packed")  # fmt: skip
            logsAfter = readLogs(port, samples)
            differ = [t for t in samples if logsAfter[t] != logsBefore[t]]
            if differ:
                raise BenchFailure(f"the logs of tasks {differ} read back differently")
            wall = lastAt - ready
            took = vacuum(db, "ANALYZE")
            after = sizes(db)
            tookFull = vacuum(db, "FULL task_logs")
            full = sizes(db)
        compression = {
            "wall": wall, "rate": args.tasks / wall, "lines": lineCount / wall,
            "from_first": (args.tasks - first) / max(lastAt - firstAt, 1e-9),
            "first_s": firstAt - ready, "vacuum": took, "vacuum_full": tookFull,
        }  # fmt: skip
        reportGrowth(args, before, after, full, empty, textBytes, compression, len(samples))
        suspicious(secondLog)
        return True
    except (BenchFailure, RuntimeError, OSError, psycopg2.Error) as e:
        print(f"FAIL: {e.__class__.__name__}: {e}")
        if popen is not None and popen.poll() is not None:
            print(f"the master exited with status {popen.returncode}")
        for log in sorted(tmp.glob("master-*.log")):
            print(f"--- tail of {log} ---\n{tail(log)}")
        return False
    finally:
        stopMaster(popen, tmp)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"growth: {time.monotonic() - began:.0f} s")


def reportGrowth(args: argparse.Namespace, before: dict[str, int], after: dict[str, int],
                 full: dict[str, int], empty: int, textBytes: int, c: dict[str, float],
                 checked: int) -> None:  # fmt: skip
    n = args.tasks
    scale = MILLION / n
    scaled = "" if n == MILLION else f" (measured on {n} tasks, scaled x{scale:g})"
    print(f"\n== growth: {n} finished tasks, one attempt and {LINES} log lines each ==")
    print(f"compression (retention.compress_logs, interval_s 1): every attempt packed"
          f" {c['wall']:.1f} s after the master was ready (first seen packed after"
          f" {c['first_s']:.1f} s)")  # fmt: skip
    print(f"  {c['rate']:.0f} attempts/s, {c['lines']:.0f} lines/s over that;"
          f" {c['from_first']:.0f} attempts/s from the first packed;"
          f" per 1,000,000 tasks: {MILLION / c['rate']:.0f} s{scaled}")  # fmt: skip
    print(f"  {checked} logs read the same through GET /api/v1/tasks/{{id}}/log before and"
          f" after")  # fmt: skip
    print(f"  VACUUM ANALYZE after: {c['vacuum']:.1f} s; VACUUM FULL task_logs:"
          f" {c['vacuum_full']:.1f} s")  # fmt: skip
    heads = ["before", "after, VACUUM", "after, VACUUM FULL task_logs"]
    print(f"\nMB{'':22}" + "".join(f"{h:>30}" for h in heads) + f"{'per 1M tasks, before':>22}"
          f"{'per 1M, after FULL':>20}")  # fmt: skip
    rows = [*TABLES, "database"]
    for name in rows:
        values = [d[name] - (empty if name == "database" else 0) for d in (before, after, full)]
        label = "database growth" if name == "database" else name
        print(f"{label:24}" + "".join(f"{mb(v):>30}" for v in values)
              + f"{mb(values[0] * scale):>22}{mb(values[2] * scale):>20}")  # fmt: skip
    print(f"(database growth: pg_database_size minus {mb(empty).strip()} MB of the empty"
          " database, after VACUUM ANALYZE)")  # fmt: skip

    def logs(d: dict[str, int]) -> float:
        return (d["task_logs"] + d["task_logs_packed"]) / n

    b, a, f = logs(before), logs(after), logs(full)
    print(f"\nlog bytes a task (task_logs + task_logs_packed, with indexes and TOAST):"
          f" before {b:.0f}, after {a:.0f} (VACUUM: task_logs' dead space kept),"
          f" after VACUUM FULL task_logs {f:.0f}; ratio before / after {b / f:.1f}")  # fmt: skip
    print(f"  raw text {textBytes / n:.0f} bytes a task ({textBytes / n / LINES:.0f} a line);"
          f" task_logs stored {before['task_logs'] / max(textBytes, 1):.2f} of it"
          f" (PostgreSQL compresses an array over 2 kB itself), task_logs_packed"
          f" {full['task_logs_packed'] / max(textBytes, 1):.2f}")  # fmt: skip
    per = sum(before[t] for t in TABLES) / n
    perAfter = sum(full[t] for t in TABLES) / n
    print(f"  the four tables, bytes a task: before {per:.0f}, after {perAfter:.0f};"
          f" per 1,000,000 tasks {per * MILLION / 2**30:.2f} GiB before,"
          f" {perAfter * MILLION / 2**30:.2f} GiB after{scaled}")  # fmt: skip


# -- part 2: deletion under load -----------------------------------------------


def schedulerArgs(extra: list[str]) -> argparse.Namespace:
    """
    scheduler_bench.py's own arguments (its parser and defaults) for the
    throughput case, with C{extra}: its main, with runCase caught.
    """
    captured: list[argparse.Namespace] = []
    real = scheduler_bench.runCase
    scheduler_bench.runCase = lambda a, case: bool(captured.append(a)) or True
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            scheduler_bench.main(["--case", "throughput", *extra])
    finally:
        scheduler_bench.runCase = real
    return captured[0]


_STATEMENT = re.compile(r"duration: ([\d.]+) ms\s+(?:statement|execute [^:]*): (.*)", re.S)


def shape(text: str) -> str:
    text = re.sub(r"'[^']*'", "?", " ".join(text.split()))
    return re.sub(r"ARRAY\[[^\]]*\]", "ARRAY", re.sub(r"\b\d+\b", "N", text))[:110]


class OldJob:
    """
    scheduler_bench's before_measure hook: a finished job of C{tasks} tasks,
    made 3 days old, and a thread that watches retention delete it.
    """

    def __init__(self, tasks: int, due: str, warmup: int, logMs: int) -> None:
        self.tasks, self.due, self.warmup, self.logMs = tasks, due, warmup, logMs
        self.samples: list[tuple[float, int, int]] = []  # (t, tasks left, others' done)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.job = 0
        self.dueAt: float | None = None
        self.goneAt: float | None = None
        self.statements: list[tuple[float, str]] = []
        self.error: str | None = None
        self.logFile: Path | None = None
        self.logOffset = 0
        self.canceled = 0

    def __call__(self, port: int, pg: Postgres, db: Any) -> None:
        if not self.tasks:  # a baseline: the same watch, of the throughput job only
            self.thread = threading.Thread(target=self.watch, args=(pg.dsn,), daemon=True)
            self.thread.start()
            return
        began = time.monotonic()
        with db.cursor() as cursor:
            cursor.execute(f"ALTER SYSTEM SET log_min_duration_statement = {int(self.logMs)}")
            cursor.execute("SELECT pg_reload_conf()")
            cursor.execute("SHOW data_directory")
            self.logFile = Path(cursor.fetchone()[0]) / "log"
        self.job = submitPaused(port, [self.tasks], "retention bench: old job", 1)[0]
        finishJob(pg.dsn, self.job, "now() - interval '3 days 1 hour'",
                  "now() - interval '3 days'" if self.due == "insert" else "NULL")  # fmt: skip
        checkDone(db, [self.job], [self.tasks])
        # What inserting left (dirty pages, tables for autovacuum) is not
        # retention's: out of the way before the measurement.
        took = time.monotonic() - began
        vacuum(db, "ANALYZE tasks, task_attempts, task_logs")
        with db.cursor() as cursor:
            cursor.execute("CHECKPOINT")
        # Only what the server logs from now on counts (not the insertion).
        self.logOffset = self.logFile.stat().st_size if self.logFile.exists() else 0
        due = "now" if self.due == "insert" else "as the window opens"
        print(f"old job {self.job}: {self.tasks} done tasks, {LINES} log lines each, inserted"
              f" in {took:.1f} s (then VACUUM ANALYZE, CHECKPOINT: {time.monotonic() - began:.1f}"
              f" s in all); due {due}")  # fmt: skip
        self.thread = threading.Thread(target=self.watch, args=(pg.dsn,), daemon=True)
        self.thread.start()

    def watch(self, dsn: str) -> None:
        try:
            with closing(psycopg2.connect(dsn)) as db:
                db.autocommit = True
                with db.cursor() as cursor:
                    others = "SELECT coalesce(sum(n_done), 0) FROM jobs WHERE id <> %s"
                    if self.due == "warmup":
                        while not self.stopping.is_set():
                            cursor.execute(others, (self.job,))
                            if int(cursor.fetchone()[0]) >= self.warmup:
                                break
                            time.sleep(0.1)
                        if self.stopping.is_set():
                            return
                    if self.due == "warmup" and self.tasks:
                        cursor.execute("UPDATE jobs SET finished_at = now() - interval '3 days'"
                                       " WHERE id = %s", (self.job,))  # fmt: skip
                    self.dueAt = time.monotonic()
                    while not self.stopping.is_set():
                        cursor.execute(
                            "SELECT (SELECT count(*) FROM tasks WHERE job_id = %(j)s),"
                            " (SELECT coalesce(sum(n_done), 0) FROM jobs WHERE id <> %(j)s),"
                            " EXISTS (SELECT 1 FROM jobs WHERE id = %(j)s)",
                            {"j": self.job},
                        )
                        left, done, exists = cursor.fetchone()
                        self.samples.append((time.monotonic(), int(left), int(done)))
                        if not exists and self.tasks:
                            self.goneAt = time.monotonic()
                            break
                        time.sleep(0.5)
            self.readLog()
        except psycopg2.Error as e:  # the run ended: its master stopped PostgreSQL
            self.error = f"{e.__class__.__name__}: {str(e).strip()}"

    def readLog(self) -> None:
        if self.logFile is None or not self.logFile.exists():
            return
        with self.logFile.open("rb") as f:
            f.seek(self.logOffset)
            text = f.read().decode(errors="replace")
        self.canceled = len(
            re.findall(r"canceling statement due to (?:statement|lock) timeout", text)
        )
        for entry in re.split(r"\n(?=\d{4}-\d\d-\d\d )", text):
            m = _STATEMENT.search(entry)
            if m is not None:
                self.statements.append((float(m.group(1)), " ".join(m.group(2).split())))

    def finish(self) -> dict[str, Any]:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(30)
        s = self.samples
        full = [x for x in s if x[1] == self.tasks]
        none = [x for x in s if x[1] == 0]
        due = self.dueAt or 0.0
        r: dict[str, Any] = {"job": self.job, "error": self.error, "gone": self.goneAt,
                             "left": s[-1][1] if s else self.tasks,
                             "samples": [(t - due, done) for t, _, done in s]}  # fmt: skip
        if not self.tasks:
            return r
        if none:
            start = full[-1] if full else s[0]
            end = none[0]
            r["seconds"] = end[0] - start[0]
            r["tasks_per_s"] = (start[1] - end[1]) / max(r["seconds"], 1e-9)
            r["after_due"] = end[0] - (self.dueAt or end[0])
            r["began_after_due"] = start[0] - (self.dueAt or start[0])
            r["during"] = (end[2] - start[2]) / max(r["seconds"], 1e-9)
        job = rf"\b{self.job}\b"
        retention = re.compile(
            rf"DELETE FROM tasks WHERE id IN .*job_id = {job}|DELETE FROM jobs WHERE id = {job}"
            rf"|agent_job_history|agent_failure_history|retention_marks"
            rf"|masterd_satisfy_whole\(NULL, ARRAY\[{job}|masterd_frame_dependencies\(ARRAY"
            rf"\(SELECT id FROM tasks WHERE job_id = {job}|a\.job_id = {job}"
            rf"|FROM jobs WHERE id = {job} AND state IN|UPDATE jobs SET deleting"
            rf"|FROM jobs WHERE finished_at < now\(\)|FROM jobs WHERE \(deleting"
            rf"|FROM tasks WHERE job_id = {job} ORDER BY state|DELETE FROM tasks WHERE id = ANY"
            rf"|farm_history_retired|DELETE FROM jobs j WHERE j\.id = {job}|a\.task_id = ANY"
            rf"|task_dependencies d JOIN tasks c ON c\.id = d\.child WHERE d\.parent = ANY"
            rf"|JOIN layers l ON l\.id = d\.child WHERE d\.parent_job = {job}"
        )  # fmt: skip
        mine = ("SELECT (SELECT count(*) FROM tasks WHERE job_id", "UPDATE jobs SET finished_at")
        logged = [(ms, t) for ms, t in self.statements if not t.startswith(mine)]
        ours = [(ms, t) for ms, t in logged if retention.search(t)]
        others = [(ms, t) for ms, t in logged if not retention.search(t)]
        batches = [ms for ms, t in ours if t.startswith("DELETE FROM tasks WHERE id = ANY")]
        r["longest"] = max(ours, default=None)
        kinds: dict[str, list[float]] = {}
        for ms, t in ours:
            kinds.setdefault(shape(t)[:70], []).append(ms)
        r["kinds"] = sorted(kinds.items(), key=lambda kv: -max(kv[1]))[:4]
        r["batches_logged"] = batches
        r["other_longest"] = max(others, default=None)
        r["logged"] = len(logged)
        r["canceled"] = self.canceled
        return r


def deletion(args: argparse.Namespace) -> bool:
    sargs = schedulerArgs(shlex.split(args.scheduler_args))
    shown = {k: v for k, v in sorted(vars(sargs).items())
             if k not in ("production_jobs", "production_frames", "contention_agents", "jobs",
                          "job_tasks", "latency_tasks", "hold")}  # fmt: skip
    print(f"\n### deletion under load: scheduler_bench.py throughput case, {args.rounds} round(s)"
          f" of baseline then retention; its arguments: {shown}")  # fmt: skip
    results: list[dict[str, Any]] = []
    good = True
    for round_ in range(args.rounds):
        for kind in ("baseline", "retention"):
            a = copy.copy(sargs)
            retention = kind == "retention"
            hook = OldJob(args.delete_tasks if retention else 0, args.due, a.warmup, args.log_ms)
            a.before_measure = hook
            if retention:
                a.config = sargs.config + DELETE.format(duty=args.duty)
            config = DELETE.format(duty=args.duty).strip()
            print(f"\n##### round {round_ + 1}, {kind}"
                  + (f" (config: {config})" if retention else ""))  # fmt: skip
            scheduler_bench.RATES.clear()
            ok = scheduler_bench.runCase(a, "throughput")
            r: dict[str, Any] = {"kind": kind, "round": round_ + 1, "ok": ok,
                                 "rate": scheduler_bench.RATES.get("throughput")}  # fmt: skip
            r.update(hook.finish())
            if retention and r.get("error") and r.get("gone") is None:
                print(f"watching the old job ended: {r['error']}")
            good = good and ok and r["rate"] is not None
            results.append(r)
    reportDeletion(args, sargs, results)
    return good


def reportDeletion(args: argparse.Namespace, sargs: argparse.Namespace,
                   results: list[dict[str, Any]]) -> None:  # fmt: skip
    print(f"\n== deletion under load: {sargs.agents} agents, throughput job of {sargs.tasks}"
          f" tasks, steady window up to {sargs.duration:g} s; old job of {args.delete_tasks}"
          f" tasks ({LINES} lines each), max_lock_ms 200, duty {args.duty:g} ==")  # fmt: skip
    for r in results:
        rate = f"{r['rate']:.0f}" if r["rate"] is not None else "-"
        line = f"round {r['round']} {r['kind']:9}: {rate:>6} lifecycles/s (steady window)"
        if r["kind"] == "retention":
            if "seconds" in r:
                line += (f"; deleted {args.delete_tasks} tasks in {r['seconds']:.1f} s:"
                         f" {r['tasks_per_s']:.0f} tasks/s (+-0.5 s polls; began"
                         f" {r['began_after_due']:.1f} s after due, done {r['after_due']:.1f} s"
                         f" after); {r['during']:.0f} lifecycles/s committed then")  # fmt: skip
            else:
                line += f"; deletion NOT finished: {r['left']} of {args.delete_tasks} tasks left"
        print(line)
        if r["kind"] == "retention":
            if r.get("longest"):
                ms, text = r["longest"]
                print(f"    longest retention statement (of {r['logged']} logged >="
                      f" {args.log_ms} ms): {ms:.1f} ms  {shape(text)}")  # fmt: skip
            else:
                print(f"    no retention statement took {args.log_ms} ms or more"
                      + ("" if r.get("gone") else " (or the log was not read: the job was"
                         " not gone before the run ended)"))  # fmt: skip
            for text, times in r.get("kinds", []):
                print(f"      {len(times):4} logged, longest {max(times):6.1f} ms  {text}")
            b = r.get("batches_logged") or []
            if b:
                print(f"    task batches >= {args.log_ms} ms: {len(b)}, longest {max(b):.1f} ms")
            print(
                f"    statements canceled by statement_timeout / lock_timeout (server log):"
                f" {r.get('canceled', 0)}"
            )
            if r.get("other_longest"):
                ms, text = r["other_longest"]
                print(f"    longest other statement: {ms:.1f} ms  {shape(text)}")
    base = [r["rate"] for r in results if r["kind"] == "baseline" and r["rate"]]
    ret = [r["rate"] for r in results if r["kind"] == "retention" and r["rate"]]
    if base and ret:
        b, w = sum(base) / len(base), sum(ret) / len(ret)
        print(f"lifecycles/s with / without retention: {w:.0f} / {b:.0f} = {w / b:.2f}"
              f"   >= {RATIO_TARGET}  {verdict(w / b >= RATIO_TARGET)}")  # fmt: skip
        for x, y in zip(base, ret, strict=False):
            print(f"  pair: {y:.0f} / {x:.0f} = {y / x:.2f}")
    # Like for like: the baselines' committed lifecycles/s over the same
    # seconds after their window opened as each deletion took in its run.
    for r in results:
        if "during" not in r:
            continue
        lo, hi = r["began_after_due"], r["after_due"]
        same = [x for b in results if b["kind"] == "baseline"
                if (x := committedRate(b["samples"], lo, hi)) is not None]  # fmt: skip
        if same:
            m = sum(same) / len(same)
            print(f"round {r['round']}: committed lifecycles/s from {lo:.1f} to {hi:.1f} s after"
                  f" the window opened, while deleting / baselines: {r['during']:.0f} /"
                  f" {m:.0f} = {r['during'] / m:.2f}")  # fmt: skip
    rates = [r for r in results if r["kind"] == "retention" and "seconds" in r]
    if rates:
        print("deletion rate: " + ", ".join(f"{r['tasks_per_s']:.0f}" for r in rates) + " tasks/s")


def committedRate(samples: list[tuple[float, int]], lo: float, hi: float) -> float | None:
    """
    Committed lifecycles/s between C{lo} and C{hi} s after the window
    opened, interpolated from a watch's samples (none: not covered).
    """
    if len(samples) < 2 or samples[0][0] > lo or samples[-1][0] < hi or hi <= lo:
        return None

    def at(t: float) -> float:
        for (t0, d0), (t1, d1) in itertools.pairwise(samples):
            if t0 <= t <= t1:
                return d0 + (d1 - d0) * (t - t0) / max(t1 - t0, 1e-9)
        return float(samples[-1][1])

    return (at(hi) - at(lo)) / (hi - lo)


# -- main ----------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    add = parser.add_argument
    add("--part", choices=["growth", "deletion", "all"], default="all")
    add("--tasks", type=int, default=MILLION, help="finished tasks, growth (1000000; fewer:"
        " the figures per 1,000,000 are scaled)")  # fmt: skip
    add("--job-frames", type=int, default=100_000, help="frames of each job submitted, growth"
        " (100000; at most 1000000)")  # fmt: skip
    add("--compress-timeout", type=float, default=1800, help="the longest compression may"
        " take, s (1800)")  # fmt: skip
    add("--delete-tasks", type=int, default=100_000, help="tasks of the old job, deletion"
        " (100000)")  # fmt: skip
    add("--duty", type=float, default=0.5,
        help="retention.duty of the deletion runs (0.5, the default; 1: no pauses)")  # fmt: skip
    add("--rounds", type=int, default=2, help="baseline + retention pairs (2: ABAB)")
    add("--due", choices=["warmup", "insert"], default="warmup", help="when the old job"
        " becomes 3 days old: as the steady window opens, or once inserted (warmup)")  # fmt: skip
    add("--log-ms", type=int, default=20, help="log_min_duration_statement during the"
        " retention runs, ms (20)")  # fmt: skip
    add("--scheduler-args", default=SCHEDULER_ARGS, help="scheduler_bench.py's arguments,"
        f" added to its defaults (use =; '{SCHEDULER_ARGS}')")  # fmt: skip
    add("--keep", action="store_true", help="keep the growth master's directory")
    args = parser.parse_args(argv)
    if not 0 < args.job_frames <= MILLION or args.tasks <= 0:
        parser.error("--tasks must be > 0 and --job-frames in 1 ... 1000000")
    began = time.monotonic()
    good = True
    if args.part in ("growth", "all"):
        good = growth(args) and good
    if args.part in ("deletion", "all"):
        good = deletion(args) and good
    print(f"whole benchmark: {time.monotonic() - began:.0f} s")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
