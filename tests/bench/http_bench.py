"""
HTTP overhead benchmark: GET /api/v1/master on a real master against a bare
twisted.web resource that serves the same bytes.

Run it from the repository root, with wrk installed (C{apt-get install wrk})::

    python tests/bench/http_bench.py [--duration 10] [--connections 32] [--threads 1]

It starts a master (embedded PostgreSQL, a viewer token) and a baseline server
as subprocesses on free loopback ports, runs a 2 s wrk warm-up and then the
measured wrk run against each with the same settings, and prints requests/s,
p50/p99 latency and the ratio master/baseline (target: >= 0.45). This is a
benchmark, not a test: trial does not collect it. Exit status: 0 once measured
(whatever the ratio), 1 if a server fails or the master answers non-2xx, 2 if
wrk is missing. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TOKEN = "bench-token-0123456789"
PATH = "/api/v1/master"
TARGET = 0.45
CONFIG = """\
master: {{name: bench-master}}
http: {{listen: ["tcp:{port}:interface=127.0.0.1"]}}
database: {{embedded: {{data_dir: {tmp}/pgdata}}}}
auth: {{tokens: [{{name: bench, role: viewer, token: {token}}},
                {{name: bench-admin, role: admin, token: {token}-admin}}]}}
"""


def baselineServer(port: int, bodyFile: str) -> None:
    """
    A plain twisted.web leaf resource with a fixed JSON body, default reactor.
    """
    from twisted.internet import reactor as installed
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    body = Path(bodyFile).read_bytes()

    class Fixed(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"content-type", b"application/json")
            return body

    site = Site(Fixed())
    site.noisy = False
    reactor: Any = installed
    reactor.listenTCP(port, site, interface="127.0.0.1")
    reactor.run()


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def waitFor(url: str, process: subprocess.Popen[bytes], timeout: float) -> float:
    """
    Poll C{url} until it answers 200; return the seconds it took.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if get(url, timeout=1.0)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


def twistd() -> str:
    beside = Path(sys.executable).parent / "twistd"
    found = str(beside) if beside.exists() else shutil.which("twistd")
    if found is None:
        raise RuntimeError("cannot find twistd next to this Python or on $PATH")
    return found


_SUSPICIOUS = re.compile(r"traceback|unhandled|error|fail|critical", re.I)
_ACCESS = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) [^"]*" \d{3} ')
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, args: argparse.Namespace, duration: float, token: str = TOKEN) -> dict[str, Any]:
    command = [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s",
        "--latency", "-H", f"Authorization: Bearer {token}", url,
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"cannot parse wrk's output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": float(rps.group(1)), "p50": ms(p50.group(1)), "p99": ms(p99.group(1)),
        "non2xx": int(bad.group(1)) if bad else 0,
        "errors": errors.group(0) if errors else None, "output": out,
    }  # fmt: skip


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"pid {process.pid} ignored SIGTERM for {timeout:.0f} s; killing it")
        process.kill()
        process.wait()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="masterd-bench-"))
    masterLog, baselineLog = tmp / "master.log", tmp / "baseline.log"
    master: subprocess.Popen[bytes] | None = None
    baseline: subprocess.Popen[bytes] | None = None
    shown = False  # the master's log tail, once is enough
    try:
        masterPort, basePort = freePort(), freePort()
        config = tmp / "master.yaml"
        config.write_text(CONFIG.format(port=masterPort, tmp=tmp, token=TOKEN))
        with masterLog.open("wb") as log:
            master = subprocess.Popen(
                [twistd(), "-n", "--pidfile=", "masterd", "-c", str(config)],
                cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        masterURL = f"http://127.0.0.1:{masterPort}"
        try:
            startup = waitFor(masterURL + "/readyz", master, 60.0)
        except RuntimeError as e:
            print(f"master: {e}\n--- tail of {masterLog} ---\n{tail(masterLog)}")
            shown = True
            return 1
        # Twice: from the second on, the body holds its own route's counter.
        get(masterURL + PATH, TOKEN)
        status, body = get(masterURL + PATH, TOKEN)
        if status != 200:
            print(f"master: GET {PATH} answered {status}: {body[:500]!r}")
            return 1
        bodyFile = tmp / "body.json"
        bodyFile.write_bytes(body)
        with baselineLog.open("wb") as log:
            baseline = subprocess.Popen(
                [sys.executable, __file__, "--baseline-server", str(basePort), str(bodyFile)],
                cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        baseURL = f"http://127.0.0.1:{basePort}"
        try:
            waitFor(baseURL + PATH, baseline, 30.0)
        except RuntimeError as e:
            print(f"baseline: {e}\n{tail(baselineLog)}")
            return 1

        print(
            f"master ready after {startup:.1f} s; body {len(body)} bytes; wrk -t{args.threads}"
            f" -c{args.connections} -d{args.duration:g}s (after a 2 s warm-up each)"
        )
        # A token kept in the database: read once, then from the cache.
        request = urllib.request.Request(
            masterURL + "/api/v1/tokens", method="POST",
            data=json.dumps({"user": "bench-db", "role": "viewer"}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}-admin",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        runs = [("master", masterURL + PATH, TOKEN)]
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                runs.append(("master-db", masterURL + PATH, json.loads(answer.read())["secret"]))
        except urllib.error.HTTPError as e:
            # A master from before database tokens (a baseline build).
            print(f"no database token ({e.code}): measuring the file's token only")
        runs.append(("baseline", baseURL + PATH, TOKEN))
        results: dict[str, dict[str, Any]] = {}
        for name, url, token in runs:
            wrk(url, args, 2, token)
            results[name] = wrk(url, args, args.duration, token)
        m, b = results["master"], results["baseline"]
        for name, r in results.items():
            if r["errors"]:
                print(f"{name}: wrk reports {r['errors']}")
        for name in ("master", "master-db"):
            r = results.get(name, {"non2xx": 0})
            if r["non2xx"]:
                print(f"FAIL: {name} answered {r['non2xx']} non-2xx/3xx responses\n{r['output']}")
                print(f"--- tail of {masterLog} ---\n{tail(masterLog)}")
                shown = True
                return 1
        after = json.loads(get(masterURL + PATH, TOKEN)[1])
        if after["exceptions"]["total"]:
            print(f"master recorded {after['exceptions']['total']} unhandled exceptions:")
            print(json.dumps(after["exceptions"]["recent"][:3], indent=2))
        suspicious = [
            line for line in masterLog.read_text(errors="replace").splitlines()
            if _SUSPICIOUS.search(line) and not _ACCESS.search(line)
        ]  # fmt: skip
        if suspicious:
            print(f"master log has {len(suspicious)} suspicious lines, e.g.:")
            print("\n".join(suspicious[:10]))

        ratio = m["rps"] / b["rps"]
        print(f"\n{'':10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
        for name, r in results.items():
            print(f"{name:10}{r['rps']:>10.0f}{r['p50']:>10.2f}{r['p99']:>10.2f}")
        verdict = "PASS" if ratio >= TARGET else "BELOW TARGET"
        print(f"\nratio master/baseline: {ratio:.3f}  (target: ratio >= {TARGET})  {verdict}")
        if "master-db" in results:
            db = results["master-db"]["rps"]
            print(f"ratio master (database token)/baseline: {db / b['rps']:.3f};"
                  f" database token / file token: {db / m['rps']:.3f}")  # fmt: skip
        return 0
    finally:
        stop(master)
        stop(baseline)
        if master is not None and master.returncode not in (0, -signal.SIGTERM) and not shown:
            print(f"master exited with status {master.returncode}; tail of its log:")
            print(tail(masterLog))
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--baseline-server"]:
        baselineServer(int(argv[1]), argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--duration", type=float, default=10, help="seconds per run (10)")
    parser.add_argument("--connections", type=int, default=32, help="open connections (32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk")
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
