"""
OpenJD benchmark, on a real master (embedded PostgreSQL) and real reference
agents:

    python tests/bench/openjd_bench.py [--runs 5] [--agents 10] [--tasks 1000]
        [--enter-s 0.2]

 1. C{POST /api/v1/jobs} of a template whose step has a parameter space of
    100,000 combinations, C{--runs} times, alternating with the native form
    of as many tasks (target: median <= 2.0 s, as for the native form);
 2. a job of C{--tasks} short tasks (C{true}) on C{--agents} agents of one
    slot each, whose job environment takes C{--enter-s} to enter (a
    licence checkout, a tool's start-up): the wall time from submission to
    done with environments entered once per OpenJD session (the agents'
    default linger), then with the agents started with
    C{--openjd-linger-s 0}, which enters them for every task;
 3. adaptive chunks: C{--frames} frames of C{--frame-s} each (a sleep, for
    a render) on the same agents, in chunks of C{--chunk} values, with a
    C{targetRuntimeSeconds} of C{--target-s} and without one: the wall time
    of each, and the runtimes of the adaptive job's chunks (median and
    spread, against the target) and their sizes.

A benchmark, not a test: it prints figures and asserts nothing on timing.
Exit status 0 once measured, 1 if the master or an agent fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.http_bench import freePort, stop, tail, twistd, waitFor
from tests.bench.jobs_bench import TOKEN, BenchFailure, Client, checkTotal, job

AGENT_TOKEN = "bench-agent-token-0123456789"
CONFIG = """\
master: {{name: bench-master}}
http: {{listen: ["tcp:{port}:interface=127.0.0.1"], access_log: false}}
database: {{embedded: {{data_dir: {tmp}/pgdata}}}}
auth: {{tokens: [{{name: bench, role: admin, token: {token}}},
                {{name: agents, role: agent, token: {agent}}}]}}
scheduler: {{sweep_s: 1}}
"""


def space(count: int) -> dict[str, Any]:
    return {
        "specificationVersion": "jobtemplate-2023-09",
        "name": f"space of {count}",
        "steps": [{
            "name": "render",
            "parameterSpace": {"taskParameterDefinitions": [
                {"name": "Frame", "type": "INT", "range": f"1-{count}"}]},
            "script": {"actions": {"onRun": {"command": "true"}}},
        }],
    }  # fmt: skip


def sessions(count: int, enter: float) -> dict[str, Any]:
    return {
        "specificationVersion": "jobtemplate-2023-09",
        "name": f"{count} short tasks",
        "jobEnvironments": [{"name": "Setup", "script": {"actions": {
            "onEnter": {"command": "sleep", "args": [str(enter)]}}}}],
        "steps": [{
            "name": "work",
            "parameterSpace": {"taskParameterDefinitions": [
                {"name": "Frame", "type": "INT", "range": f"1-{count}"}]},
            "script": {"actions": {"onRun": {"command": "true"}}},
        }],
    }  # fmt: skip


#: An action that sleeps --frame-s for each value of its chunk ("a-b").
SLEEPER = (
    "import sys, time; a, b = sys.argv[2].split('-');"
    " time.sleep(float(sys.argv[1]) * (int(b) - int(a) + 1))"
)


def chunked(frames: int, chunk: int, frameS: float, target: int | None) -> dict[str, Any]:
    chunks: dict[str, Any] = {"defaultTaskCount": chunk, "rangeConstraint": "CONTIGUOUS"}
    if target is not None:
        chunks["targetRuntimeSeconds"] = target
    return {
        "specificationVersion": "jobtemplate-2023-09",
        "extensions": ["TASK_CHUNKING"],
        "name": f"{frames} frames, target {target}",
        "steps": [{
            "name": "render",
            "parameterSpace": {"taskParameterDefinitions": [
                {"name": "Frame", "type": "CHUNK[INT]", "range": f"1-{frames}",
                 "chunks": chunks}]},
            "script": {"actions": {"onRun": {"command": sys.executable, "args": [
                "-c", SLEEPER, str(frameS), "{{Task.Param.Frame}}"]}}},
        }],
    }  # fmt: skip


def benchChunks(tmp: Path, port: int, args: argparse.Namespace) -> dict[str, Any]:
    print(f"3. {args.frames} frames of {args.frame_s} s on {args.agents} agents, chunks of"
          f" {args.chunk}: a target of {args.target_s} s, and none")  # fmt: skip
    results: dict[str, Any] = {}
    agents = startAgents(tmp, port, args.agents, None)
    try:
        waitIdle(port, args.agents)
        for label, target in [("adaptive", args.target_s), ("fixed", None)]:
            client = Client(port)
            started = time.perf_counter()
            tpl = chunked(args.frames, args.chunk, args.frame_s, target)
            document = client.request("POST", "/api/v1/jobs", {"openjd": {"template": tpl}}, 201)
            while document["state"] not in ("done", "failed", "canceled"):
                time.sleep(0.2)
                document = client.request("GET", document["href"])
            wall = time.perf_counter() - started
            if document["state"] != "done":
                raise BenchFailure(f"the job ended {document['state']}: {document['tasks']}")
            runtimes, sizes = [], []
            page = client.request("GET", f"{document['href']}/tasks?limit=500")
            while True:
                for task in page["items"]:
                    sizes.append(len(task["frames"]))
                    runtimes.append(_seconds(task["finished_at"]) - _seconds(task["started_at"]))
                if not page.get("next"):
                    break
                page = client.request("GET", page["next"])
            # The chunks after the first round (sized from finished ones).
            later = runtimes[args.agents :] or runtimes
            results[label] = {"wall_s": wall, "tasks": len(sizes),
                              "size_median": statistics.median(sizes), "size_max": max(sizes),
                              "runtime_median_s": statistics.median(later),
                              "runtime_p10_s": _quantile(later, 0.1),
                              "runtime_p90_s": _quantile(later, 0.9)}  # fmt: skip
            print(f"   {label}: {wall:.1f} s, {len(sizes)} tasks (sizes {min(sizes)}-"
                  f"{max(sizes)}, median {statistics.median(sizes):g}); runtimes after the"
                  f" first {args.agents}: median {statistics.median(later):.2f} s,"
                  f" p10 {_quantile(later, 0.1):.2f} s,"
                  f" p90 {_quantile(later, 0.9):.2f} s")  # fmt: skip
    finally:
        for process, log in agents:
            stop(process)
            log.close()
    waitGone(port)
    print(f"   fixed / adaptive (wall): "
          f"{results['fixed']['wall_s'] / results['adaptive']['wall_s']:.2f}\n")  # fmt: skip
    return results


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def benchSubmit(port: int, runs: int) -> dict[str, list[float]]:
    print("1. POST /api/v1/jobs: 100,000 combinations (OpenJD) against 100,000 native tasks")
    seconds: dict[str, list[float]] = {"openjd": [], "native": []}
    for run in range(runs):
        bodies = [
            ("openjd", {"openjd": {"template": space(100_000)}, "paused": True}),
            ("native", {**job(f"native {run}", "1-100000"), "paused": True}),
        ]
        for kind, body in bodies:
            client = Client(port)
            started = time.perf_counter()
            document = client.request("POST", "/api/v1/jobs", body, 201)
            seconds[kind].append(time.perf_counter() - started)
            client.close()
            checkTotal(document, 100_000)
        print(f"   run {run + 1}: openjd {seconds['openjd'][-1]:.3f} s,"
              f" native {seconds['native'][-1]:.3f} s")  # fmt: skip
    for kind, values in seconds.items():
        print(f"   {kind}: median {statistics.median(values):.3f} s, max {max(values):.3f} s")
    ratio = statistics.median(seconds["openjd"]) / statistics.median(seconds["native"])
    print(f"   openjd / native (medians): {ratio:.2f}\n")
    return seconds


def startAgents(tmp: Path, port: int, count: int, linger: float | None) -> list[Any]:
    agents = []
    for i in range(count):
        directory = tmp / f"agent-{linger}-{i}"
        directory.mkdir()
        extra = [] if linger is None else ["--openjd-linger-s", str(linger)]
        log = (directory / "agent.log").open("wb")
        agents.append((subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "masterd-agent", "--master", f"http://127.0.0.1:{port}",
             "--token", AGENT_TOKEN, "--state-dir", str(directory / "state"), "--max-tasks", "1",
             "--hostname", f"bench{i:02d}", *extra],
            cwd=directory, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        ), log))  # fmt: skip
    return agents


def waitIdle(port: int, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = Client(port).request("GET", "/api/v1/agents?state=idle&limit=500")
        if len(page["items"]) >= count:
            return
        time.sleep(0.2)
    raise BenchFailure(f"{count} agents were not idle within {timeout:.0f} s")


def benchSessions(tmp: Path, port: int, args: argparse.Namespace) -> dict[str, float]:
    print(f"2. {args.tasks} short tasks on {args.agents} agents, a job environment of"
          f" {args.enter_s} s to enter")  # fmt: skip
    results: dict[str, float] = {}
    for label, linger in [("once per session", None), ("per task (linger 0)", 0.0)]:
        agents = startAgents(tmp, port, args.agents, linger)
        try:
            waitIdle(port, args.agents)
            client = Client(port)
            started = time.perf_counter()
            document = client.request("POST", "/api/v1/jobs", {
                "openjd": {"template": sessions(args.tasks, args.enter_s)}}, 201)  # fmt: skip
            while document["state"] not in ("done", "failed", "canceled"):
                time.sleep(0.2)
                document = client.request("GET", document["href"])
            wall = time.perf_counter() - started
            if document["state"] != "done":
                raise BenchFailure(f"the job ended {document['state']}: {document['tasks']}")
            results[label] = wall
            print(f"   {label}: {wall:.1f} s ({args.tasks / wall:.1f} tasks/s)")
        finally:
            for process, log in agents:
                stop(process)
                log.close()
        waitGone(port)
    print(f"   per task / once per session: "
          f"{results['per task (linger 0)'] / results['once per session']:.2f}\n")  # fmt: skip
    return results


def waitGone(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = Client(port).request("GET", "/api/v1/agents?state=idle&limit=500")
        busy = Client(port).request("GET", "/api/v1/agents?state=busy&limit=500")
        if not page["items"] and not busy["items"]:
            return
        time.sleep(0.5)


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="masterd-openjd-bench-"))
    masterLog = tmp / "master.log"
    master = None
    try:
        port = freePort()
        config = tmp / "master.yaml"
        config.write_text(CONFIG.format(port=port, tmp=tmp, token=TOKEN, agent=AGENT_TOKEN))
        with masterLog.open("wb") as log:
            master = subprocess.Popen(
                [twistd(), "-n", "--pidfile=", "masterd", "-c", str(config)],
                cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        waitFor(f"http://127.0.0.1:{port}/readyz", master, 60.0)
        submitted = benchSubmit(port, args.runs) if args.runs else {}
        ran = benchSessions(tmp, port, args) if args.agents and args.tasks else {}
        chunks = benchChunks(tmp, port, args) if args.agents and args.frames else {}
        print("JSON " + json.dumps({"submit_s": submitted, "sessions_s": ran, "chunks": chunks}))
        return 0
    except (BenchFailure, RuntimeError, OSError) as e:
        print(f"FAIL: {e.__class__.__name__}: {e}")
        print(f"--- tail of {masterLog} ---\n{tail(masterLog)}")
        return 1
    finally:
        stop(master)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"whole benchmark: {time.monotonic() - began:.0f} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--runs", type=int, default=5, help="pairs of big POSTs (5; 0 skips)")
    parser.add_argument("--agents", type=int, default=10, help="agents (10; 0 skips part 2)")
    parser.add_argument("--tasks", type=int, default=1000, help="short tasks (1000)")
    parser.add_argument("--enter-s", type=float, default=0.2, help="job environment enter (0.2)")
    parser.add_argument("--frames", type=int, default=2000, help="frames of part 3 (2000; 0 skips)")
    parser.add_argument("--frame-s", type=float, default=0.1, help="a frame's time (0.1)")
    parser.add_argument("--chunk", type=int, default=1, help="defaultTaskCount (1)")
    parser.add_argument("--target-s", type=int, default=2, help="targetRuntimeSeconds (2)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
