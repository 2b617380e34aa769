"""
Talkback benchmark: 10,000 agents holding WebSocket connections to one master,
each sending a heartbeat every 10 s.

Run it from the repository root::

    python tests/bench/talkback_bench.py [--connections 10000] [--duration 60]
        [--processes 1] [--rate 500] [--sample 5] [--config 'scheduler: {sweep_s: 60}']

It starts a master (embedded PostgreSQL, an admin and an agent token) as a
subprocess on a free loopback port, measures its RSS with no agent, then
starts C{--processes} load generators (talkback_load.py) that open the
connections at C{--rate} a second in all. Once every agent has its welcome
and one heartbeat period has passed, it samples every C{--sample} seconds for
C{--duration} seconds: the master's RSS and CPU, the generators' and
PostgreSQL's CPU, C{talkback.agents_connected} and the Heartbeat count from
C{GET /api/v1/master}, the heartbeats the generators sent, and the round
trip of the generators' WebSocket pings (10 a second: how soon the master's
reactor answers; a stall shows there). Then it counts the agents whose
C{last_seen} the batched flush wrote in the last 15 s.

With C{--takeover} it runs the takeover case instead (tests/bench/_takeover.py):
one PostgreSQL, two masters A and B on it, one job of N (C{--connections})
no-op tasks; the generators' agents (C{--ports A,B --hold}) all welcomed by A,
each running one task it holds; then A is killed (SIGKILL) and the agents
reconnect to B at once. It measures how soon B has welcomed them all (target
<= 5 s after the kill), B's, PostgreSQL's and the generators' CPU meanwhile,
the reconnections' welcome latency, tasks rerun (target 0), and, once the
agents finish their tasks, that every task has exactly one attempt, done::

    python tests/bench/talkback_bench.py --takeover [--connections 10000] [--rate 500]
        [--processes 1] [--settle 15] [--config 'master: {expire_s: 60}']

Targets: master RSS <= 1.5 GB; per heartbeat period, the master receives ~N
heartbeats and the lag (sent - received) does not grow. This is a benchmark,
not a test: trial does not collect it. Exit status: 0 once measured (whatever
the figures), 1 if a connection is refused or dropped, or the master or a
generator dies.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import psycopg2

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.http_bench import _SUSPICIOUS, freePort, get, stop, twistd, waitFor

ADMIN = "bench-admin-token-0123456789"
LOAD = Path(__file__).with_name("talkback_load.py")
CONFIG = """\
master: {{name: bench-master}}
http: {{listen: ["tcp:{port}:interface=127.0.0.1"], access_log: false}}
database: {{embedded: {{data_dir: {tmp}/pgdata}}}}
auth:
  tokens:
    - {{name: bench, role: admin, token: {admin}}}
    - {{name: agents, role: agent, token: bench-agent-token-0123456789}}
"""


class BenchFailure(Exception):
    pass


def cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


class Loads:
    """
    The generator processes, asked for their counters over their stdin/stdout.
    """

    def __init__(self, args: argparse.Namespace, port: int, **extra: Any) -> None:
        """
        C{extra}: more options for every generator (C{ports="1,2"}); C{True}
        gives a flag alone (C{hold=True}).
        """
        n, k = args.connections, args.processes
        self.procs = []
        for i in range(k):
            count, first = n // k + (i < n % k), i * (n // k) + min(i, n % k)
            options = {"port": port, "count": count, "first": first, "rate": args.rate / k,
                       "period": args.period, **extra}  # fmt: skip
            command = [sys.executable, str(LOAD)]
            for name, value in options.items():
                command += [f"--{name}"] if value is True else [f"--{name}", str(value)]
            pipe = subprocess.PIPE
            self.procs.append(subprocess.Popen(command, stdin=pipe, stdout=pipe, text=True))
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    def command(self, line: str) -> None:
        for p in self.procs:
            assert p.stdin is not None
            try:
                p.stdin.write(line + "\n")
                p.stdin.flush()
            except OSError:
                raise BenchFailure(f"generator {p.pid} died (status {p.poll()})") from None

    def each(self) -> list[dict[str, Any]]:
        """
        Every generator's counters, one dict each.
        """
        self.command("stats")
        found = []
        for p in self.procs:
            assert p.stdout is not None
            try:
                found.append(json.loads(p.stdout.readline()))
            except (OSError, ValueError):
                raise BenchFailure(f"generator {p.pid} died (status {p.poll()})") from None
        return found

    def stats(self) -> dict[str, Any]:
        total: dict[str, Any] = {"closes": {}, "first_error": ""}
        for one in self.each():
            for key, value in one.items():
                if isinstance(value, int):
                    total[key] = total.get(key, 0) + value
                elif isinstance(value, list):  # quantiles: the worst generator's
                    total[key] = [max(a) for a in zip(value, total.get(key, value), strict=True)]
            for code, count in one["closes"].items():
                total["closes"][code] = total["closes"].get(code, 0) + count
            total["first_error"] = total["first_error"] or one["first_error"]
        return total

    def quit(self) -> None:
        for p in self.procs:
            try:
                assert p.stdin is not None
                p.stdin.write("quit\n")
                p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


class Postgres:
    """
    The embedded PostgreSQL (from its postmaster.pid): a DSN, and the CPU
    time of its processes, counting the backends and workers that come and go.
    """

    def __init__(self, pgdata: Path) -> None:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        self.server = psutil.Process(int(lines[0]))
        self.dsn = f"host={lines[4]} port={lines[3]} user=postgres dbname=masterd"
        self.seen: dict[int, float] = {}
        self.total = 0.0

    def cpu(self) -> float:
        for p in [self.server, *self.server.children(recursive=True)]:
            now = cpu([p])
            self.total += max(0.0, now - self.seen.get(p.pid, 0.0))
            self.seen[p.pid] = now
        return self.total


def stopOrphan(pgdata: Path) -> None:
    """
    A master killed outright leaves its embedded PostgreSQL running: stop it.
    """
    try:
        server = Postgres(pgdata).server
        if server.name() == "postgres":
            server.send_signal(signal.SIGINT)  # fast shutdown
            server.wait(30)
    except (OSError, IndexError, ValueError, psutil.Error):
        pass  # no postmaster.pid: it stopped with the master


def tail(log: Path, count: int = 40) -> str:
    """
    The end of the master's log, without the line each agent's hello logs.
    """
    lines = log.read_text(errors="replace").splitlines() if log.exists() else ["(no log)"]
    return "\n".join([line for line in lines if "connected (bench-" not in line][-count:])


def listenOverflows() -> int:
    """
    SYNs the kernel dropped because a listen queue was full, machine-wide.
    """
    rows = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()]
    for names, values in zip(rows[::2], rows[1::2], strict=False):
        if names[0] == "TcpExt:" and "ListenOverflows" in names:
            return int(values[names.index("ListenOverflows")])
    return 0


def talkback(port: int) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    status, body = get(f"http://127.0.0.1:{port}/api/v1/master", ADMIN, timeout=30)
    elapsed = (time.perf_counter() - started) * 1e3
    if status != 200:
        raise BenchFailure(f"GET /api/v1/master answered {status}: {body[:300]!r}")
    whole = json.loads(body)
    document: dict[str, Any] = {**whole["talkback"], "gc": whole.get("gc")}
    return document, elapsed


def sample(master: psutil.Process, loads: Loads, pg: Postgres, port: int) -> dict[str, Any]:
    tb, apiMs = talkback(port)  # the master first: a lag can only be overestimated
    at, st = time.monotonic(), loads.stats()
    return {
        "t": at, "rss": master.memory_info().rss, "cpu": cpu([master]),
        "gen": cpu(loads.ps), "pg": pg.cpu(), "machine": psutil.cpu_times(),
        "genRSS": sum(p.memory_info().rss for p in loads.ps),
        "connected": tb["agents_connected"], "recv": tb["messages_in"].get("Heartbeat", 0),
        "sent": st.get("sent", 0), "api": apiMs, "rtt": st["rtt_ms"], "stats": st,
        "gc": tb["gc"],
    }  # fmt: skip


def ramp(args: argparse.Namespace, master: subprocess.Popen[bytes], loads: Loads) -> str:
    """
    Wait until every agent is welcomed (or has failed); a line about it.
    """
    started = last = time.monotonic()
    overflows = listenOverflows()
    deadline = started + args.connections / args.rate * 3 + 120
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        time.sleep(1)
        if master.poll() is not None:
            raise BenchFailure(f"the master exited with status {master.returncode}")
        st = loads.stats()
        welcomed, failed = st.get("welcomed", 0), st.get("failed", 0)
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            print(f"  {last - started:5.0f} s: {welcomed} welcomed, {failed} failed")
        if welcomed + failed >= args.connections:
            break
    if st.get("welcomed", 0) < args.connections:
        raise BenchFailure(f"{args.connections - st.get('welcomed', 0)} connections got no"
                           f" welcome; first error: {st.get('first_error')}")  # fmt: skip
    note = (
        f"{time.monotonic() - started:.1f} s; connect to welcome p50 {st['welcome_ms'][0]:.0f} ms,"
        f" p99 {st['welcome_ms'][1]:.0f} ms, max {st['welcome_ms'][2]:.0f} ms;"
        f" {listenOverflows() - overflows} listen queue overflows"
    )
    print(f"ramp-up: {note}")
    return note


def idle(times: Any) -> float:
    return float(times.idle + getattr(times, "iowait", 0))


def verdict(good: bool) -> str:
    return "PASS" if good else "BELOW TARGET"


def fullCollections(first: dict[str, Any] | None, end: dict[str, Any] | None,
                    wall: float) -> str:  # fmt: skip
    """
    The master's generation-2 collections over the window, from its own
    counters (C{gc} in GET /api/v1/master).
    """
    if not first or not end:
        return "(the master does not report them)"
    count = end["collections"][2] - first["collections"][2]
    paused = end["pause_ms_total"][2] - first["pause_ms_total"][2]
    return (f"{count} in {wall:.0f} s, {paused:.0f} ms in all"
            f" ({paused / count if count else 0:.0f} ms each); longest since start"
            f" {end['pause_ms_max'][2]:.0f} ms")  # fmt: skip


def report(
    args: argparse.Namespace, rss0: int, rows: list[dict[str, Any]], fresh: int, ramp: str
) -> bool:
    n, first, end = args.connections, rows[0], rows[-1]
    wall = end["t"] - first["t"]
    busy = 1 - (idle(end["machine"]) - idle(first["machine"])) / (
        sum(end["machine"]) - sum(first["machine"]))  # fmt: skip
    print(f"\n{'t s':>5}{'RSS MB':>8}{'CPU %':>7}{'gen %':>7}{'pg %':>6}{'conn':>7}{'hb sent':>9}"
          f"{'hb recv':>9}{'lag':>6}{'api ms':>8}{'probe p50/max ms':>18}")  # fmt: skip
    for a, b in itertools.pairwise(rows):
        pct = [(b[k] - a[k]) / (b["t"] - a["t"]) * 100 for k in ("cpu", "gen", "pg")]
        print(f"{b['t'] - first['t']:5.0f}{b['rss'] / 1e6:8.0f}{pct[0]:7.1f}{pct[1]:7.1f}"
              f"{pct[2]:6.1f}{b['connected']:7}{b['sent'] - a['sent']:9}{b['recv'] - a['recv']:9}"
              f"{b['sent'] - b['recv']:6}{b['api']:8.1f}"
              f"{b['rtt'][0]:11.1f}/{b['rtt'][1]:.1f}")  # fmt: skip
    step = max(1, round(args.period / args.sample))
    print(f"\nheartbeats per {args.period:g} s window (expected: N = {n} a period,"
          " times the window's measured length)")  # fmt: skip
    print(f"{'window s':>14}{'sent':>8}{'received':>10}{'recv/expected':>15}{'lag at end':>12}")
    steady = True
    for a, b in [(rows[i], rows[i + step]) for i in range(0, len(rows) - step, step)]:
        recv, expected = b["recv"] - a["recv"], n * (b["t"] - a["t"]) / args.period
        steady &= abs(recv / expected - 1) <= 0.05
        print(f"{a['t'] - first['t']:6.1f}-{b['t'] - first['t']:<7.1f}{b['sent'] - a['sent']:8}"
              f"{recv:10}{recv / expected:15.3f}{b['sent'] - b['recv']:12}")  # fmt: skip
    # A sample can fall between a tick's sends and their arrival: up to a
    # slot's worth (N/100) of lag is in flight, not backlog.
    lags = [r["sent"] - r["recv"] for r in rows]
    steady &= lags[-1] - lags[0] <= max(50, 0.03 * n)
    rss, st, cores = max(r["rss"] for r in rows), end["stats"], psutil.cpu_count()
    share = {k: (end[k] - first[k]) / wall * 100 for k in ("cpu", "gen", "pg")}
    p50s, worst = sorted(r["rtt"][0] for r in rows[1:]), max(r["rtt"][1] for r in rows[1:])
    stalls = sum(r["rtt"][1] > 100 for r in rows[1:])
    rate = (end["recv"] - first["recv"]) / (n * wall / args.period)
    for label, value in [
        ("ramp-up", ramp),
        ("connections held", f"{min(r['connected'] for r in rows)} of {n} (min over samples)"),
        ("master RSS, no agents", f"{rss0 / 1e6:.0f} MB"),
        ("master RSS, N agents (max)", f"{rss / 1e6:.0f} MB"
                                       f"   RSS <= 1.5 GB  {verdict(rss <= 1.5e9)}"),
        ("memory per connection", f"{(end['rss'] - rss0) / n / 1024:.1f} KiB"),
        ("master CPU", f"{share['cpu']:.1f} % of one core over {wall:.0f} s"),
        ("generators CPU", f"{share['gen']:.1f} % of one core ({args.processes} process(es),"
                           f" RSS {end['genRSS'] / 1e6:.0f} MB)"),
        ("PostgreSQL CPU", f"{share['pg']:.1f} % of one core"),
        ("machine busy", f"{busy * cores * 100:.0f} % of one core ({cores} cores), of which"
                         f" master + generators + PostgreSQL {sum(share.values()):.0f} %"),
        ("heartbeats received / expected", f"{rate:.3f}   every window within 5 %,"
                                           f" lag not growing  {verdict(steady)}"),
        ("lag sent - received", f"{lags[0]} at start, {lags[-1]} at end, max {max(lags)}"),
        ("probe round trip", f"median p50 {p50s[len(p50s) // 2]:.1f} ms, max {worst:.0f} ms;"
                             f" {stalls} of {len(p50s)} intervals had one > 100 ms"),
        ("full garbage collections", fullCollections(first["gc"], end["gc"], wall)),
        ("last_seen within 15 s (DB)", f"{fresh} of {n}  {verdict(fresh >= n * 0.99)}"),
        ("dropped / close codes / errors", f"{st.get('dropped', 0)} / {st['closes']}"
                                           f" / {st.get('error_messages', 0)}"),
    ]:  # fmt: skip
        print(f"{label:32}{value}")
    return not st.get("dropped") and not st.get("failed") and min(r["connected"] for r in rows) == n


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="masterd-talkback-bench-"))
    masterLog = tmp / "master.log"
    master: subprocess.Popen[bytes] | None = None
    loads: Loads | None = None
    try:
        port = freePort()
        config = tmp / "master.yaml"
        config.write_text(CONFIG.format(port=port, tmp=tmp, admin=ADMIN) + args.config)
        with masterLog.open("wb") as log:
            master = subprocess.Popen(
                [twistd(), "-n", "--pidfile=", "masterd", "-c", str(config)],
                cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        startup = waitFor(f"http://127.0.0.1:{port}/readyz", master, 60.0)
        talkback(port)
        time.sleep(2)
        proc = psutil.Process(master.pid)
        rss0 = proc.memory_info().rss
        print(f"master ready after {startup:.1f} s (pid {master.pid}, RSS {rss0 / 1e6:.0f} MB,"
              f" log {masterLog}); {args.connections} agents at {args.rate:g}/s from"
              f" {args.processes} generator(s)")  # fmt: skip
        loads = Loads(args, port)
        rampNote = ramp(args, master, loads)
        print(f"settling for one heartbeat period ({args.period:g} s)")
        time.sleep(args.period)
        pg = Postgres(tmp / "pgdata")
        pg.cpu()
        rows = [sample(proc, loads, pg, port)]
        print(f"steady state: {args.duration:g} s, a sample every {args.sample:g} s")
        while rows[-1]["t"] - rows[0]["t"] < args.duration - 0.5:
            time.sleep(max(0.0, rows[0]["t"] + len(rows) * args.sample - time.monotonic()))
            rows.append(sample(proc, loads, pg, port))
            if master.poll() is not None:
                raise BenchFailure(f"the master exited with status {master.returncode}")
        with closing(psycopg2.connect(pg.dsn)) as db, db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM agents"
                           " WHERE last_seen > now() - interval '15 seconds'")  # fmt: skip
            fresh = (cursor.fetchone() or [0])[0]
        good = report(args, rss0, rows, fresh, rampNote)
        loads.quit()
        loads, gone = None, time.monotonic()
        while talkback(port)[0]["agents_connected"] and time.monotonic() - gone < 60:
            time.sleep(0.5)
        print(f"after the generators quit, the master let every agent go in"
              f" {time.monotonic() - gone:.1f} s")  # fmt: skip
        suspicious = [line for line in masterLog.read_text(errors="replace").splitlines()
                      if _SUSPICIOUS.search(line)]  # fmt: skip
        if suspicious:
            print(f"master log has {len(suspicious)} suspicious lines, e.g.:")
            print("\n".join(suspicious[:10]))
        if not good:
            print(f"FAIL: connections were refused or dropped\n--- tail of {masterLog} ---")
            print(tail(masterLog))
        return 0 if good else 1
    except (BenchFailure, RuntimeError, OSError, psycopg2.Error) as e:
        print(f"FAIL: {e.__class__.__name__}: {e}")
        if master is not None and master.poll() is not None:
            print(f"the master exited with status {master.returncode}")
        print(f"--- tail of {masterLog} (less the agents' hellos) ---\n{tail(masterLog)}")
        return 1
    finally:
        if loads is not None:
            loads.quit()
        stop(master, 60)
        stopOrphan(tmp / "pgdata")
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"whole benchmark: {time.monotonic() - began:.0f} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--connections", type=int, default=10_000, help="agents (10000)")
    parser.add_argument("--duration", type=float, default=60, help="steady state, s (60)")
    parser.add_argument("--processes", type=int, default=1, help="load generators (1)")
    parser.add_argument("--rate", type=float, default=500, help="new connections a second (500)")
    parser.add_argument("--sample", type=float, default=5, help="seconds between samples (5)")
    parser.add_argument("--period", type=float, default=10, help="heartbeat period, s (10)")
    parser.add_argument("--config", default="", help="YAML appended to the master's config,"
                        " e.g. 'scheduler: {sweep_s: 3600}' (--takeover: merged into both"
                        " masters' configs)")  # fmt: skip
    parser.add_argument("--takeover", action="store_true", help="the takeover case: two masters,"
                        " the agents' master killed (tests/bench/_takeover.py)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=15, help="--takeover: seconds after"
                        " the last re-welcome before the database is checked (15)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.connections < args.processes:
        parser.error("--connections must be >= --processes")
    if args.duration < 3 * args.period and not args.takeover:
        parser.error("--duration must cover 3 heartbeat periods")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.takeover:
        from tests.bench._takeover import run as takeover

        return takeover(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
