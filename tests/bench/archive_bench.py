"""
Archive benchmark (docs/archive.md): the memory and time of writing a big
finished job's archive, the old way (C{readArchive}'s whole document in
memory, encoded to one bytes object, written in a thread) against
C{writeArchive}'s stream (page by page to the temporary file).

Run it from the repository root::

    python tests/bench/archive_bench.py [--tasks 100000] [--lines 1000000]
        [--row-lines 5] [--packed 0.5] [--no-logs] [--keep]

It starts an embedded PostgreSQL (pgserver, or C{MASTERD_TEST_DSN}), migrates
a fresh database, submits one paused job of C{--tasks} frames
(C{JobStore.createJob}) and finishes it by set-based SQL, as
retention_bench.py does: every task done with one done attempt (with its
usage) and C{--lines} log lines in all, spread evenly over the attempts, as
rows of task_logs of C{--row-lines} lines (each one log message, render-log
text of about 100 bytes a line); then the logs of a C{--packed} share of
the attempts are compressed into task_logs_packed (masterd.jobs.logs
.packAttempts, as retention does), and VACUUM ANALYZE.

Each way then runs in a fresh subprocess, so that one's peak does not hide
the other's: the growth of its peak RSS (ru_maxrss, from just before the
archive to its end), its wall time, the file's size and the longest the
reactor went without running a 5 ms timer. The two files must be the same
but for archived_at (else exit status 1). With C{--no-logs} the archive is
written without logs, as retention writes it by default
(retention.archive_logs: false).

A benchmark, not a test: trial does not collect it, and it asserts nothing
on the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # absolute(), not resolve(): the tree this file is in, even through a link.
    sys.path.insert(0, str(Path(__file__).absolute().parents[2]))

import msgspec
import psycopg2
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from masterd.db import Pool, Transaction, migrate
from masterd.events import EventBus
from masterd.jobs import JobStore, jobSpec
from masterd.jobs.logs import packAttempts
from masterd.jobs.models import JobSubmission
from masterd.retention.archive import readArchive, writeArchive
from tests._postgres import createDatabase, dropDatabase

ROOT = Path(__file__).absolute().parents[2]

# The job's tasks done as agents would have left them (one done attempt
# each, usage reported, one of 200 agents), and its log lines: task t gets
# {base} lines (one more for the first {extra} tasks), as rows of {row}.
FINISH = """
UPDATE tasks SET state = 'done', attempt = 1, progress = 1, exit_code = 0,
    agent_id = ('bbbbbbbb-0000-4000-8000-' || lpad((index % 200)::text, 12, '0'))::uuid,
    finished_at = now() - interval '2 hours' + (index / 50) * interval '50 milliseconds',
    started_at = now() - interval '2 hours' + (index / 50) * interval '50 milliseconds'
        - (20 + id % 40) * interval '1 second'
WHERE job_id = {job};
INSERT INTO task_attempts (task_id, attempt, job_id, agent_id, state, started_at, finished_at,
    exit_code, wall_s, cpu_user_s, cpu_system_s, peak_rss_kb)
SELECT id, 1, job_id, agent_id, 'done', started_at, finished_at, 0,
    extract(epoch FROM finished_at - started_at), 60 + id % 300, 2 + id % 5,
    1500000 + id % 400000
FROM tasks WHERE job_id = {job};
INSERT INTO task_logs (task_id, attempt, first_line, lines, at)
SELECT t.id, 1, r * {row}, ARRAY(
    SELECT format('Fra:%s Mem:%sM (Peak %sM) | Time:00:%s | Remaining:00:%s | Mem:%sM,'
        ' Peak:%sM | Scene, ViewLayer | Sample %s/128', t.frames[1],
        to_char(900 + random() * 300, 'FM9990.00'), to_char(1400 + random() * 300, 'FM9990.00'),
        to_char(g * 1.6 + random(), 'FM00.00'), to_char(random() * 30, 'FM00.00'),
        to_char(400 + random() * 200, 'FM990.00'), to_char(700 + random() * 100, 'FM990.00'),
        g % 128)
    FROM generate_series(r * {row}, least(t.n, (r + 1) * {row}) - 1) g), t.finished_at
FROM (SELECT id, index, frames, finished_at, {base} + (index < {extra})::int AS n
      FROM tasks WHERE job_id = {job}) t,
    generate_series(0, (t.n + {row} - 1) / {row} - 1) r;
"""


def mb(n: float) -> float:
    return n / 2**20


# -- the child: one way of writing the archive, measured ----------------------


def _oldWrite(directory: Path, jobID: int, data: bytes) -> Path:
    # What writeArchive did before it streamed: the whole file at once.
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"job-{jobID}.json"
    fd, temporary = tempfile.mkstemp(prefix=f".job-{jobID}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    return target


async def oldWriteArchive(
    pool: Pool, jobID: int, directory: Path, logs: bool, store: JobStore
) -> tuple[Path, int]:
    data = msgspec.json.encode(await readArchive(pool, store, jobID, logs))
    path: Path = await deferToThread(_oldWrite, directory, jobID, data)
    return path, len(data)


def resetPeak() -> int:
    """
    The peak RSS so far forgotten (Linux: 5 to /proc/self/clear_refs sets
    the high-water mark to the RSS now, from which a process that was just
    started and imported much starts high); the RSS now, in bytes.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status("VmRSS")


def peakRSS() -> int:
    """
    The peak RSS in bytes: since resetPeak, the kernel's high-water mark
    (what ru_maxrss reads, which also keeps a peak from before exec).
    """
    try:
        return _status("VmHWM")
    except (OSError, KeyError):
        # Linux gives ru_maxrss in KiB.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) * 1024
    raise KeyError(key)


async def measure(reactor: Any, args: argparse.Namespace) -> None:
    pool = Pool(reactor, args.dsn, minSize=1, maxSize=1, statementTimeout=600.0)
    await pool.open()
    store = JobStore(pool, EventBus("bench"))
    # The longest the reactor went without running a timer of 5 ms.
    last = [time.perf_counter()]
    stall = [0.0]

    def tick() -> None:
        now = time.perf_counter()
        stall[0] = max(stall[0], now - last[0])
        last[0] = now

    gc.collect()
    before = resetPeak()
    ticker = task.LoopingCall(tick)
    ticker.start(0.005)
    began = time.perf_counter()
    write = oldWriteArchive if args.child == "old" else writeArchive
    path, size = await write(pool, args.job, Path(args.dir), args.logs, store)
    wall = time.perf_counter() - began
    tick()
    ticker.stop()
    peak = peakRSS()
    await pool.close()
    figures = {"before": before, "peak": peak, "wall": wall, "size": size, "path": str(path),
               "stall": stall[0]}  # fmt: skip
    print("FIGURES " + json.dumps(figures), flush=True)


# -- the parent: the job, then each way in a subprocess ------------------------


async def fill(reactor: Any, dsn: str, args: argparse.Namespace) -> int:
    pool = Pool(reactor, dsn, minSize=1, maxSize=1, statementTimeout=1800.0)
    await pool.open()
    try:
        await migrate(pool)
        store = JobStore(pool, EventBus("bench"))
        began = time.monotonic()
        spec = jobSpec(JobSubmission(title="archive bench", command=["render", "{frame}"],
                                     frames=f"1-{args.tasks}", paused=True))  # fmt: skip
        job = (await store.createJob(spec, "bench")).id
        print(f"submitted a paused job of {args.tasks} tasks in {time.monotonic() - began:.1f} s")
        began = time.monotonic()
        sql = FINISH.format(job=int(job), base=args.lines // args.tasks,
                            extra=args.lines % args.tasks, row=args.row_lines)  # fmt: skip
        await pool.transaction(lambda txn: txn.execute(sql))
        [(state, lines, rows)] = await pool.query(
            "SELECT (SELECT state FROM jobs WHERE id = %s), sum(cardinality(lines)), count(*)"
            " FROM task_logs",
            (job,),
        )
        if state != "done" or lines != args.lines:
            raise SystemExit(f"the job is {state}, with {lines} log lines")
        print(f"finished it by SQL ({args.lines} lines in {rows} rows of task_logs) in"
              f" {time.monotonic() - began:.1f} s")  # fmt: skip
        began = time.monotonic()
        share = round(args.packed * 100)
        keys = [(r[0], 1) for r in await pool.query(
            "SELECT id FROM tasks WHERE job_id = %s AND index %% 100 < %s ORDER BY id",
            (job, share))]  # fmt: skip
        for start in range(0, len(keys), 2000):
            batch = keys[start : start + 2000]

            async def compress(txn: Transaction, batch: list[tuple[int, int]] = batch) -> None:
                await packAttempts(txn, batch)

            await pool.transaction(compress)
        print(f"compressed the logs of {len(keys)} attempts in {time.monotonic() - began:.1f} s")
    finally:
        await pool.close()
    with closing(psycopg2.connect(dsn)) as db:
        db.autocommit = True
        with db.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
            # Every table read once, so that neither way pays for a cold cache.
            for table in ("tasks", "task_attempts", "task_logs", "task_logs_packed"):
                cursor.execute(f"SELECT count(*) FROM {table}")
    return int(job)


def run(kind: str, dsn: str, job: int, directory: Path, logs: bool) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).absolute()), "--child", kind, "--dsn", dsn,
            "--job", str(job), "--dir", str(directory)]  # fmt: skip
    if not logs:
        argv.append("--no-logs")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    found = [line for line in done.stdout.splitlines() if line.startswith("FIGURES ")]
    if done.returncode != 0 or not found:
        raise SystemExit(f"{kind}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    figures: dict[str, Any] = json.loads(found[-1].removeprefix("FIGURES "))
    return figures


_ARCHIVED_AT = re.compile(rb'"archived_at":"[^"]*"')


def sameButTime(a: Path, b: Path) -> bool:
    """
    The two files hold the same bytes, but for archived_at's value (near
    the start).
    """
    with a.open("rb") as x, b.open("rb") as y:
        head = 4096
        if _ARCHIVED_AT.sub(b"", x.read(head), 1) != _ARCHIVED_AT.sub(b"", y.read(head), 1):
            return False
        while True:
            p, q = x.read(1 << 20), y.read(1 << 20)
            if p != q:
                return False
            if not p:
                return True


async def parent(reactor: Any, args: argparse.Namespace) -> int:
    name = f"masterd_archive_bench_{int(time.time())}"
    dsn = createDatabase(name)
    tmp = Path(tempfile.mkdtemp(prefix="masterd-archive-bench-"))
    try:
        began = time.monotonic()
        job = await fill(reactor, dsn, args)
        print(f"job {job}: {args.tasks} tasks, one attempt each, {args.lines} log lines"
              f" ({args.row_lines} a row, {args.packed:.0%} of the attempts' logs compressed);"
              f" ready in {time.monotonic() - began:.0f} s")  # fmt: skip
        results = {}
        for kind in ("old", "new"):
            figures = await deferToThread(run, kind, dsn, job, tmp / kind, args.logs)
            results[kind] = figures
            print(f"{kind} done in {figures['wall']:.1f} s", flush=True)
        same = sameButTime(Path(results["old"]["path"]), Path(results["new"]["path"]))
        what = "with logs" if args.logs else "without logs"
        print(f"\narchive of {args.tasks} tasks, {args.lines} log lines, {what}:")
        print(f"{'':34}{'peak RSS growth':>16}{'wall':>9}{'file':>11}{'reactor stall':>15}")
        labels = {"old": "old: encode(await readArchive())", "new": "new: writeArchive (streamed)"}
        for kind, f in results.items():
            print(f"{labels[kind]:34}{mb(f['peak'] - f['before']):13.1f} MB{f['wall']:7.1f} s"
                  f"{mb(f['size']):8.1f} MB{f['stall']:13.2f} s"
                  f"   (RSS {mb(f['before']):.0f} MB before)")  # fmt: skip
        old, new = results["old"], results["new"]
        # At least 1 MB: a growth below it is noise.
        growth = (old["peak"] - old["before"]) / max(new["peak"] - new["before"], 2**20)
        print(f"old / new: peak RSS growth {growth:.1f}x, wall {old['wall'] / new['wall']:.2f}x,"
              f" longest stall {old['stall'] / max(new['stall'], 1e-6):.1f}x; files the same but"
              f" archived_at: {'yes' if same else 'NO'}")  # fmt: skip
        return 0 if same else 1
    finally:
        dropDatabase(name)
        if args.keep:
            print(f"files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    add = parser.add_argument
    add("--tasks", type=int, default=100_000, help="tasks of the job (100000)")
    add("--lines", type=int, default=1_000_000, help="log lines in all (1000000)")
    add("--row-lines", type=int, default=5, help="lines a task_logs row (5)")
    add("--packed", type=float, default=0.5, help="share of the attempts whose logs are"
        " compressed, in hundredths (0.5)")  # fmt: skip
    add("--no-logs", dest="logs", action="store_false", help="archive without the logs")
    add("--keep", action="store_true", help="keep the two files")
    # One way, measured, in a child process.
    add("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    add("--dsn", help=argparse.SUPPRESS)
    add("--job", type=int, help=argparse.SUPPRESS)
    add("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        task.react(lambda reactor: Deferred.fromCoroutine(measure(reactor, args)))
    if args.tasks <= 0 or args.lines < 0 or args.row_lines <= 0 or not 0 <= args.packed <= 1:
        parser.error("--tasks and --row-lines must be > 0, --lines >= 0, --packed in 0 ... 1")

    async def start(reactor: Any) -> None:
        code = await parent(reactor, args)
        if code:
            raise SystemExit(code)

    task.react(lambda reactor: Deferred.fromCoroutine(start(reactor)))


if __name__ == "__main__":
    main(sys.argv[1:])
