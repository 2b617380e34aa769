"""
Jobs benchmark: creating a job of 100,000 tasks, and listing jobs with
10,000 of them in the database, on a real master.

Run it from the repository root::

    python tests/bench/jobs_bench.py [--runs 5] [--jobs 10000] [--requests 200]

It starts a master (embedded PostgreSQL, an admin token) as a subprocess on a
free loopback port and measures, client side:

 1. C{POST /api/v1/jobs} of a job with 100,000 single-frame tasks, C{--runs}
    times on a fresh connection each (target: median <= 2.0 s);
 2. after creating C{--jobs} one-frame jobs (4 threads, keep-alive),
    C{--requests} sequential C{GET /api/v1/jobs?limit=50} on a keep-alive
    connection after 20 warm-ups (target: median <= 20 ms); then, for
    comparison, pages reached by following C{next} links, a page deep in the
    list, and C{?state=queued}.

This is a benchmark, not a test: trial does not collect it. Exit status: 0
once measured (whatever the figures), 1 if the master fails to start, answers
non-2xx or reports wrong task totals. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.http_bench import _ACCESS, _SUSPICIOUS, freePort, stop, tail, twistd, waitFor

TOKEN = "bench-admin-token-0123456789"
FRAMES = 100_000
POST_TARGET = 2.0  # seconds, median
LIST_TARGET = 20.0  # milliseconds, median
WARMUP = 20
CONFIG = """\
master: {{name: bench-master}}
http: {{listen: ["tcp:{port}:interface=127.0.0.1"]}}
database: {{embedded: {{data_dir: {tmp}/pgdata}}}}
auth: {{tokens: [{{name: bench, role: admin, token: {token}}}]}}
"""


class BenchFailure(Exception):
    """
    The master answered something other than what the benchmark expects.
    """


class Client:
    """
    One keep-alive HTTP/1.1 connection to the master, with the admin token.
    """

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.connection.request(method, path, data, headers)
        response = self.connection.getresponse()
        payload = response.read()
        if response.status != expect:
            raise BenchFailure(f"{method} {path}: {response.status} {payload[:500]!r}")
        return json.loads(payload)

    def close(self) -> None:
        self.connection.close()


def job(title: str, frames: str) -> dict[str, Any]:
    return {"title": title, "command": ["true"], "frames": frames, "chunk": 1}


def checkTotal(document: dict[str, Any], expected: int) -> None:
    total = document["tasks"]["total"]
    if total != expected:
        raise BenchFailure(f"job {document['id']}: tasks.total is {total}, not {expected}")


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "BELOW TARGET"


def timed(client: Client, path: str, count: int, check: bool = True) -> list[float]:
    """
    C{count} sequential GETs of C{path}; their latencies in milliseconds.
    """
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        page = client.request("GET", path)
        latencies.append((time.perf_counter() - started) * 1e3)
        if check and len(page["items"]) != 50:
            raise BenchFailure(f"GET {path}: {len(page['items'])} items, not 50")
    return latencies


def benchPost(port: int, runs: int) -> None:
    print(f"1. POST /api/v1/jobs, {FRAMES} single-frame tasks, fresh connection each")
    seconds = []
    for run in range(runs):
        client = Client(port)
        started = time.perf_counter()
        document = client.request("POST", "/api/v1/jobs", job(f"big {run}", f"1-{FRAMES}"), 201)
        seconds.append(time.perf_counter() - started)
        client.close()
        checkTotal(document, FRAMES)
        print(f"   run {run + 1}: {seconds[-1]:.3f} s (job {document['id']})")
    median = statistics.median(seconds)
    print(f"   median {median:.3f} s, max {max(seconds):.3f} s")
    print(f"   target: median <= {POST_TARGET} s  {verdict(median <= POST_TARGET)}\n")


def createJobs(port: int, count: int, threads: int = 4) -> list[int]:
    def worker(share: range) -> list[int]:
        client = Client(port)
        try:
            ids = []
            for i in share:
                document = client.request("POST", "/api/v1/jobs", job(f"small {i}", "1"), 201)
                checkTotal(document, 1)
                ids.append(document["id"])
            return ids
        finally:
            client.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        shares = [range(i, count, threads) for i in range(threads)]
        ids = [i for part in pool.map(worker, shares) for i in part]
    elapsed = time.perf_counter() - started
    print(f"   created {count} one-frame jobs in {elapsed:.1f} s ({count / elapsed:.0f}/s,"
          f" {threads} threads)")  # fmt: skip
    return ids


def benchList(port: int, jobs: int, requests: int) -> None:
    print(f"2. GET /api/v1/jobs?limit=50 with {jobs} more jobs in the database")
    ids = createJobs(port, jobs)
    client = Client(port)
    first = "/api/v1/jobs?limit=50"
    timed(client, first, WARMUP)
    latencies = timed(client, first, requests)
    median = statistics.median(latencies)
    print(f"   {requests} sequential requests, keep-alive, after {WARMUP} warm-ups:")
    print(f"   median {median:.2f} ms, p90 {percentile(latencies, 90):.2f} ms,"
          f" p99 {percentile(latencies, 99):.2f} ms, max {max(latencies):.2f} ms")  # fmt: skip
    print(f"   target: median <= {LIST_TARGET:g} ms  {verdict(median <= LIST_TARGET)}")

    walk, path = [], first
    for _ in range(20):
        started = time.perf_counter()
        page = client.request("GET", path)
        walk.append((time.perf_counter() - started) * 1e3)
        if page["next"] is None:
            break
        path = page["next"]
    print(f"   following next for {len(walk)} pages (down to {path}):"
          f" median {statistics.median(walk):.2f} ms")  # fmt: skip
    deep = f"/api/v1/jobs?limit=50&after={min(ids) + 60}"
    timed(client, deep, 5)
    print(f"   a page near the end ({deep}), 20 requests:"
          f" median {statistics.median(timed(client, deep, 20)):.2f} ms")  # fmt: skip
    queued = "/api/v1/jobs?state=queued&limit=50"
    timed(client, queued, 5)
    print(f"   {queued}, 50 requests:"
          f" median {statistics.median(timed(client, queued, 50)):.2f} ms\n")  # fmt: skip
    client.close()


def report(port: int, masterLog: Path) -> None:
    master = Client(port).request("GET", "/api/v1/master")
    if master.get("exceptions", {}).get("total"):
        print(f"master recorded {master['exceptions']['total']} unhandled exceptions:")
        print(json.dumps(master["exceptions"]["recent"][:3], indent=2))
    suspicious = [
        line for line in masterLog.read_text(errors="replace").splitlines()
        if _SUSPICIOUS.search(line) and not _ACCESS.search(line)
    ]  # fmt: skip
    if suspicious:
        print(f"master log has {len(suspicious)} suspicious lines, e.g.:")
        print("\n".join(suspicious[:10]))


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="masterd-jobs-bench-"))
    masterLog = tmp / "master.log"
    master: subprocess.Popen[bytes] | None = None
    failed = False
    try:
        port = freePort()
        config = tmp / "master.yaml"
        config.write_text(CONFIG.format(port=port, tmp=tmp, token=TOKEN))
        with masterLog.open("wb") as log:
            master = subprocess.Popen(
                [twistd(), "-n", "--pidfile=", "masterd", "-c", str(config)],
                cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        startup = waitFor(f"http://127.0.0.1:{port}/readyz", master, 60.0)
        print(f"master ready after {startup:.1f} s (data in {tmp})\n")
        benchPost(port, args.runs)
        benchList(port, args.jobs, args.requests)
        report(port, masterLog)
        return 0
    except (BenchFailure, RuntimeError, OSError, http.client.HTTPException) as e:
        failed = True
        print(f"FAIL: {e.__class__.__name__}: {e}")
        print(f"--- tail of {masterLog} ---\n{tail(masterLog)}")
        return 1
    finally:
        stop(master)
        if master is not None and master.returncode not in (0, -signal.SIGTERM) and not failed:
            print(f"master exited with status {master.returncode}; tail of its log:")
            print(tail(masterLog))
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"whole benchmark: {time.monotonic() - began:.0f} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--runs", type=int, default=5, help="big POSTs to time (5)")
    parser.add_argument("--jobs", type=int, default=10_000, help="small jobs to create (10000)")
    parser.add_argument("--requests", type=int, default=200, help="list requests to time (200)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.jobs < 100 or args.requests < 1:
        parser.error("--runs and --requests must be at least 1, --jobs at least 100")
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
