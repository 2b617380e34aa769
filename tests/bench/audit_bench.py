"""
What the audit row costs a job submission: C{JobStore.createJob} on a real
PostgreSQL, alternating rounds with an actor (one audit row in the
submission's transaction) and without one (none), in one run.

Run it from the repository root::

    python tests/bench/audit_bench.py [--jobs 1000] [--rounds 4]

It starts an embedded PostgreSQL (pgserver, or C{MASTERD_TEST_DSN}), migrates
a fresh database and submits C{--jobs} one-frame jobs per round, one at a
time, as C{POST /api/v1/jobs} does; it prints the mean time of a submission
with and without the audit row and their ratio (target: at most 1.05,
issue 13). This is a benchmark, not a test. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from twisted.internet import defer, task

from masterd.accounts import Principal
from masterd.audit import Actor
from masterd.config import Role
from masterd.db import Pool, migrate
from masterd.events import EventBus
from masterd.jobs import JobStore, jobSpec
from masterd.jobs.models import JobSubmission
from tests._postgres import createDatabase, dropDatabase

TARGET = 1.05


async def bench(reactor: object, args: argparse.Namespace) -> None:
    name = f"masterd_audit_bench_{int(time.time())}"
    dsn = createDatabase(name)
    pool = Pool(reactor, dsn, minSize=1, maxSize=2)
    try:
        await pool.open()
        await migrate(pool)
        store = JobStore(pool, EventBus("bench"))
        spec = jobSpec(JobSubmission(title="a frame", command=["render", "{frame}"],
                                     frames="1"), 1_000_000)  # fmt: skip
        actor = Actor(Principal("alice", Role.user, 1), "bench", "127.0.0.1")
        times: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(args.jobs // 10):  # warm-up
            await store.createJob(spec, "alice")
        # Blocks of 100, in the order ABBA: the cost of a submission drifts
        # as the tables grow and the disk flushes, and this spreads the drift
        # evenly over both kinds.
        kinds = (("without", "alice"), ("with", actor))
        block = 100
        for _ in range(args.rounds):
            spent = {"without": 0.0, "with": 0.0}
            for b in range(args.jobs // block):
                for kind, owner in kinds if b % 2 == 0 else kinds[::-1]:
                    began = time.perf_counter()
                    for _ in range(block):
                        await store.createJob(spec, owner)
                    spent[kind] += time.perf_counter() - began
            for kind in spent:
                times[kind].append(spent[kind] / (args.jobs // block * block) * 1000)
        rows = await pool.query("SELECT count(*) FROM audit")
        assert rows[0][0] == args.jobs // 100 * 100 * args.rounds, rows
        without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
        for kind, values in times.items():
            print(f"{kind:>8} audit row: " + ", ".join(f"{v:.3f}" for v in values)
                  + f" ms a submission (median {statistics.median(values):.3f})")  # fmt: skip
        ratio = with_ / without
        verdict = "PASS" if ratio <= TARGET else "ABOVE TARGET"
        print(f"ratio with/without: {ratio:.3f}  (target: <= {TARGET})  {verdict}")
    finally:
        await pool.close()
        dropDatabase(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--jobs", type=int, default=1000, help="submissions per round (1000)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each kind (4)")
    args = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(bench(reactor, args)))


if __name__ == "__main__":
    main()
