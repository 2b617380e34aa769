"""
Dashboard benchmark: how soon the jobs table and the frame grid of a job of
100,000 tasks are on screen in a real browser, and what 200 open event
streams cost the master while 200 agents work.

Run it from the repository root::

    python tests/bench/dashboard_bench.py [--quick] [--jobs 10000] [--grid-tasks 100000]
        [--agent-rows 1000] [--runs 5] [--agents 200] [--streams 200] [--window 20]
        [--hold 1] [--work-tasks 20] [--config YAML] [--keep]

It starts a master (embedded PostgreSQL, an admin and an agent token;
helpers of talkback_bench.py) as a subprocess on a free loopback port, then:

 1. seeds the database: C{--jobs} one-task jobs, cloned in SQL from one job
    submitted through the API (every column as the API wrote it, but the
    title, owner, project, times and state: done, queued, failed, canceled,
    paused), their tasks inserted in their final states so that the
    database's own trigger keeps the job and layer counters, attempts for
    the tasks that ran; C{--agent-rows} offline agents; and one job of
    C{--grid-tasks} tasks through C{POST /api/v1/jobs} (paused, so that no
    agent takes its tasks; 70 % of them then marked done and 1 % failed in
    SQL, with their attempts);
 2. times C{GET /api/v1/jobs/{id}/states} of that job with a plain HTTP
    client (bytes, time to the headers, to the whole body, and the SQL alone);
 3. in headless Chromium (Playwright, Debian's /usr/bin/chromium), signs in
    once with the page's form, then C{--runs} times (warm cache, the
    session's cookie) and once in a fresh context (empty cache, the same
    cookie) measures from the start of C{page.goto} to: the first row of
    C{#jobs-body tr[data-job]} on C{/jobs}, and its link clickable; the
    canvas C{#frame-grid} with an C{aria-label} starting "Frame grid of N
    tasks" (set once every cell is drawn) on C{/jobs/{id}}. "In page" is
    the page's own clock (C{performance.now()}, from the navigation's start)
    at the first animation frame that shows it;
 4. submits work (jobs of C{--work-tasks} no-op tasks, priority 100), starts
    C{--agents} no-op agents (scheduler_load.py, tasks of C{--hold} s on
    average: the farm is not saturated, so the master's CPU is not capped),
    and measures the master's CPU and RSS over C{--window} s with no event
    stream, then with C{--streams} streams open (C{GET /api/v1/events},
    one asyncio client process counting bytes and events), then with none
    again (drift of the machine).

Target: <= 1000 ms from goto to the jobs table and to the drawn frame grid.
It prints one line a figure and a JSON summary; it asserts nothing on
timing. A benchmark, not a test: trial does not collect it. Exit status: 0
once measured (whatever the figures), 1 if the master, the browser, an agent
or a stream fails.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
import psycopg2

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from masterd.jobs.grid import taskStates
from tests.bench import jobs_bench
from tests.bench.http_bench import _SUSPICIOUS, freePort, stop, twistd, waitFor
from tests.bench.jobs_bench import Client
from tests.bench.scheduler_bench import AgentLoads, capture
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
)

ROOT = Path(__file__).resolve().parents[2]
TARGET_MS = 1000.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
OWNERS = ["ana", "ben", "chloe", "dev", "eun", "farid", "gita", "hugo"]
PROJECTS = ["aurora", "basalt", "cinder", "delta", "ember"]
KINDS = ["layout", "anim", "fx", "lighting", "comp"]
#: The seeded jobs' states, in parts of 20.
MIX = ["done"] * 11 + ["queued"] * 4 + ["failed"] * 2 + ["canceled"] * 2 + ["paused"]
#: Seeded agents' ids: far from the load generators' (seed 2).
AGENT_SEED = 0x5EED
#: Every figure, for the JSON summary.
SUMMARY: dict[str, Any] = {}


def say(label: str, value: str) -> None:
    print(f"{label:44}{value}", flush=True)


def columns(cursor: Any, table: str, skip: set[str]) -> list[str]:
    """
    The columns of C{table} that can be written, less C{skip}.
    """
    cursor.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
        " AND table_schema = current_schema() AND is_generated = 'NEVER'"
        " AND column_name <> ALL (%s) ORDER BY ordinal_position",
        (table, sorted(skip)),
    )
    return [r[0] for r in cursor.fetchall()]


COUNTERS = {f"n_{s}" for s in ("total", "waiting", "queued", "assigned", "running", "done",
                               "failed", "canceled")}  # fmt: skip


def seedJobs(db: Any, template: int, count: int, agents: list[str]) -> dict[str, int]:
    """
    C{count} one-task jobs cloned from the job C{template} (submitted through
    the API), in a mix of states, owners and projects, created over the last
    weeks. The tasks are inserted in their final states: the database's
    trigger counts them into their layer and job, as for any change.
    """
    states = [MIX[i % len(MIX)] for i in range(count)]
    titles = [f"{PROJECTS[i % 5]} shot {i:05d} {KINDS[i % 3 + i // 7 % 3]}" for i in range(count)]
    owners = [OWNERS[i * 7 % len(OWNERS)] for i in range(count)]
    projects = [PROJECTS[i % len(PROJECTS)] for i in range(count)]
    ran = [agents[i * 13 % len(agents)] if agents else None for i in range(count)]
    with db, db.cursor() as c:
        jobSkip = {"id", "title", "owner", "project", "paused", "canceled", "created_at",
                   "updated_at", "finished_at"}  # fmt: skip
        jobCols = columns(c, "jobs", jobSkip | COUNTERS)
        layerCols = columns(c, "layers", {"id", "job_id"} | COUNTERS)
        taskCols = columns(c, "tasks", {"id", "job_id", "layer_id", "state", "attempt",
                                        "failures", "agent_id", "progress", "started_at",
                                        "finished_at", "exit_code", "error"})  # fmt: skip
        c.execute(
            "CREATE TEMP TABLE seed (i int PRIMARY KEY, title text UNIQUE, owner text,"
            " project text, state text, agent uuid, at timestamptz, job_id bigint,"
            " layer_id bigint) ON COMMIT DROP"
        )
        c.execute(
            "INSERT INTO seed (i, title, owner, project, state, agent, at)"
            " SELECT u.i - 1, u.title, u.owner, u.project, u.state, u.agent,"
            " now() - (%s - u.i) * interval '3 minutes'"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::uuid[])"
            " WITH ORDINALITY AS u (title, owner, project, state, agent, i)",
            (count, titles, owners, projects, states, ran),
        )
        c.execute(
            "INSERT INTO jobs (title, owner, project, paused, canceled, created_at, updated_at,"
            f" {', '.join(jobCols)}) SELECT s.title, s.owner, s.project, s.state = 'paused',"
            f" s.state = 'canceled', s.at, s.at, {', '.join('t.' + k for k in jobCols)}"
            " FROM seed s, jobs t WHERE t.id = %s ORDER BY s.i",
            (template,),
        )
        c.execute("UPDATE seed s SET job_id = j.id FROM jobs j WHERE j.title = s.title")
        c.execute(
            f"INSERT INTO layers (job_id, {', '.join(layerCols)})"
            f" SELECT s.job_id, {', '.join('l.' + k for k in layerCols)}"
            " FROM seed s, layers l WHERE l.job_id = %s ORDER BY s.i",
            (template,),
        )
        c.execute("UPDATE seed s SET layer_id = l.id FROM layers l WHERE l.job_id = s.job_id")
        # A failed task failed max_retries + 1 times (lifecycle.failed); a
        # canceled one was queued when its job was (store._stopTasks).
        c.execute(
            "INSERT INTO tasks (job_id, layer_id, state, attempt, failures, agent_id, progress,"
            f" started_at, finished_at, exit_code, error, {', '.join(taskCols)})"
            " SELECT s.job_id, s.layer_id, CASE s.state WHEN 'paused' THEN 'queued'"
            " ELSE s.state END,"
            " CASE s.state WHEN 'done' THEN 1 WHEN 'failed' THEN j.max_retries + 1 ELSE 0 END,"
            " CASE s.state WHEN 'failed' THEN j.max_retries + 1 ELSE 0 END,"
            " CASE WHEN s.state IN ('done', 'failed') THEN s.agent END,"
            " CASE s.state WHEN 'done' THEN 1 ELSE 0 END,"
            " CASE WHEN s.state IN ('done', 'failed') THEN s.at + interval '1 minute' END,"
            " CASE WHEN s.state IN ('done', 'failed', 'canceled')"
            " THEN s.at + interval '2 minutes' END,"
            " CASE s.state WHEN 'done' THEN 0 WHEN 'failed' THEN 1 END, NULL,"
            f" {', '.join('t.' + k for k in taskCols)}"
            " FROM seed s JOIN jobs j ON j.id = s.job_id, tasks t WHERE t.job_id = %s"
            " ORDER BY s.i",
            (template,),
        )
        c.execute(
            "INSERT INTO task_attempts (task_id, attempt, job_id, agent_id, state, started_at,"
            " finished_at, exit_code)"
            " SELECT t.id, a, t.job_id, t.agent_id, CASE t.state WHEN 'done' THEN 'done'"
            " ELSE 'failed' END, t.started_at - (t.attempt - a) * interval '10 seconds',"
            " t.finished_at - (t.attempt - a) * interval '10 seconds', t.exit_code"
            " FROM seed s JOIN tasks t ON t.job_id = s.job_id, generate_series(1, t.attempt) a"
            " WHERE s.state IN ('done', 'failed') AND t.agent_id IS NOT NULL"
        )
        # The trigger stamped them now; they were changed when they ran.
        c.execute(
            "UPDATE jobs j SET updated_at = s.at + interval '2 minutes',"
            " finished_at = CASE WHEN j.finished_at IS NOT NULL"
            " THEN s.at + interval '2 minutes' END FROM seed s WHERE j.id = s.job_id"
        )
        c.execute("SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state")
        found = {state: int(n) for state, n in c.fetchall()}
        c.execute(
            "SELECT count(*) FROM jobs j WHERE n_total <> (SELECT count(*) FROM tasks t"
            " WHERE t.job_id = j.id) OR n_done <> (SELECT count(*) FROM tasks t"
            " WHERE t.job_id = j.id AND t.state = 'done')"
        )
        if c.fetchone()[0]:
            raise BenchFailure("seeded jobs' counters disagree with their tasks")
    return found


def seedAgents(db: Any, count: int) -> list[str]:
    """
    C{count} agents that were connected once and are offline now.
    """
    ids = [str(uuid.UUID(int=(AGENT_SEED << 64) | k)) for k in range(count)]
    with db, db.cursor() as c:
        c.execute(
            "INSERT INTO agents (id, hostname, os, version, cpus, ram_mb, gpus, tags, max_tasks,"
            " connected_at, disconnected_at, last_seen, lost_at, credential_sha256,"
            " enrolled_at, created_at)"
            " SELECT x.id, 'render-' || lpad(x.k::text, 4, '0'), 'linux', '1.0.0',"
            " 16 + 16 * (x.k %% 2)::int, 65536, (x.k %% 4 = 0)::int,"
            " CASE WHEN x.k %% 4 = 0 THEN ARRAY['linux', 'gpu'] ELSE ARRAY['linux'] END, 1,"
            " now() - interval '2 days', now() - interval '1 day' + x.k * interval '1 second',"
            " now() - interval '1 day' + x.k * interval '1 second',"
            " now() - interval '1 day' + x.k * interval '1 second',"
            " sha256(convert_to('seed-agent-' || x.k, 'UTF8')), now() - interval '30 days',"
            " now() - interval '30 days'"
            " FROM unnest(%s::uuid[]) WITH ORDINALITY AS x (id, k)",
            (ids,),
        )
    return ids


def mixGrid(db: Any, job: int, agents: list[str]) -> None:
    """
    70 % of the grid job's tasks done and 1 % failed, with their attempts,
    as agents would have left them (the trigger keeps the counts).
    """
    agent = agents[0] if agents else None
    with db, db.cursor() as c:
        c.execute(
            "UPDATE tasks t SET state = CASE WHEN t.index %% 100 = 99 THEN 'failed'"
            " ELSE 'done' END, attempt = 1, failures = (t.index %% 100 = 99)::int,"
            " agent_id = %s, progress = CASE WHEN t.index %% 100 = 99 THEN 0 ELSE 1 END,"
            " started_at = now() - interval '1 hour', finished_at = now() - interval '50 minutes',"
            " exit_code = CASE WHEN t.index %% 100 = 99 THEN 1 ELSE 0 END"
            " FROM jobs j WHERE j.id = t.job_id AND t.job_id = %s"
            " AND (t.index < (j.n_total * 0.7)::int OR t.index %% 100 = 99)",
            (agent, job),
        )
        c.execute(
            "INSERT INTO task_attempts (task_id, attempt, job_id, agent_id, state, started_at,"
            " finished_at, exit_code) SELECT id, 1, job_id, agent_id, state, started_at,"
            " finished_at, exit_code FROM tasks WHERE job_id = %s AND attempt = 1",
            (job,),
        )


def statesSQL(db: Any, job: int, runs: int) -> list[float]:
    """
    The SQL of GET /api/v1/jobs/{id}/states (captured from masterd's own
    code), timed alone in ms.
    """

    [(sql, params, _)] = capture([[("", [])]], lambda t: taskStates(t, job))
    times = []
    with db.cursor() as c:
        for _ in range(runs + 1):
            began = time.perf_counter()
            c.execute(sql, params)
            c.fetchall()
            times.append((time.perf_counter() - began) * 1e3)
    return times[1:]


def timeStates(port: int, job: int, runs: int) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    heads, wholes, size, count = [], [], 0, 0
    try:
        for i in range(runs + 1):
            began = time.perf_counter()
            connection.request("GET", f"/api/v1/jobs/{job}/states", headers=headers)
            response = connection.getresponse()
            head = time.perf_counter()
            body = response.read()
            end = time.perf_counter()
            if response.status != 200:
                raise BenchFailure(f"GET states: {response.status} {body[:300]!r}")
            if i:  # the first warms up
                heads.append((head - began) * 1e3)
                wholes.append((end - began) * 1e3)
            size, count = len(body), len(json.loads(body)["states"])
    finally:
        connection.close()
    return {"bytes": size, "tasks": count, "head_ms": heads, "whole_ms": wholes}


JOBS_SEEN = "() => document.querySelector('#jobs-body tr[data-job]') ? performance.now() : 0"
GRID_SEEN = """(label) => {
  const c = document.getElementById('frame-grid');
  return c && (c.getAttribute('aria-label') || '').startsWith(label) ? performance.now() : 0;
}"""
TIMINGS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const api = performance.getEntriesByType('resource')
    .filter((e) => e.name.includes('/api/v1/'))
    .map((e) => [new URL(e.name).pathname, e.startTime, e.responseEnd]);
  return { html: nav ? nav.responseEnd : 0, api };
}"""


def apiSpan(timings: dict[str, Any], suffix: str) -> tuple[float, float]:
    for name, start, end in timings["api"]:
        if name.endswith(suffix):
            return start, end
    return 0.0, 0.0


def timeJobs(page: Any) -> dict[str, float]:
    began = time.perf_counter()
    page.goto("/jobs", wait_until="commit")
    inPage = page.wait_for_function(JOBS_SEEN, polling="raf").json_value()
    rows = time.perf_counter()
    page.locator("#jobs-body tr[data-job] a").first.click(trial=True)
    clickable = time.perf_counter()
    timings = page.evaluate(TIMINGS)
    start, end = apiSpan(timings, "/api/v1/jobs")
    return {"rows": (rows - began) * 1e3, "clickable": (clickable - began) * 1e3,
            "in_page": inPage, "html": timings["html"], "list_start": start, "list_end": end,
            "count": page.locator("#jobs-body tr[data-job]").count()}  # fmt: skip


def timeGrid(page: Any, job: int, tasks: int) -> dict[str, float]:
    label = f"Frame grid of {tasks} tasks"
    began = time.perf_counter()
    page.goto(f"/jobs/{job}", wait_until="commit")
    inPage = page.wait_for_function(GRID_SEEN, arg=label, polling="raf").json_value()
    drawn = time.perf_counter()
    timings = page.evaluate(TIMINGS)
    start, end = apiSpan(timings, "/states")
    return {"drawn": (drawn - began) * 1e3, "in_page": inPage, "html": timings["html"],
            "states_start": start, "states_end": end}  # fmt: skip


def browse(base: str, runs: int, job: int, tasks: int) -> dict[str, Any]:
    """
    Sign in once, then time the two views C{runs} times with a warm cache,
    and once in a fresh context (empty cache, the session's cookie).
    """
    from playwright.sync_api import Error, sync_playwright

    try:
        return _browse(sync_playwright, base, runs, job, tasks)
    except Error as e:
        raise BenchFailure(f"browser: {e}") from None


def _browse(sync_playwright: Any, base: str, runs: int, job: int, tasks: int) -> dict[str, Any]:
    out: dict[str, Any] = {"jobs": [], "grid": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            began = time.perf_counter()
            page.goto("/")
            page.get_by_label("Token").fill(ADMIN)
            page.get_by_role("button", name="Sign in").click()
            try:
                page.wait_for_selector("#view", state="visible")
            except Exception:
                print(f"signing in failed; the page says: {page.inner_text('body')[:500]!r};"
                      f" console: {console[:5]}; errors: {errors[:5]}")  # fmt: skip
                raise
            out["signin_ms"] = (time.perf_counter() - began) * 1e3  # to the signed-in view
            for _ in range(runs):
                out["jobs"].append(timeJobs(page))
                out["grid"].append(timeGrid(page, job, tasks))
            cookies = context.cookies()
            cold = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
            cold.add_cookies(cookies)
            fresh = cold.new_page()
            fresh.set_default_timeout(60_000)
            out["cold_jobs"] = timeJobs(fresh)
            cold.close()
            cold = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
            cold.add_cookies(cookies)
            fresh = cold.new_page()
            fresh.set_default_timeout(60_000)
            out["cold_grid"] = timeGrid(fresh, job, tasks)
            cold.close()
            out["page_errors"] = errors
        finally:
            browser.close()
    return out


def p50max(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.0f} ms, max {max(values):.0f} ms"


def verdict(good: bool) -> str:
    return "within target" if good else "OVER TARGET"


def reportBrowser(b: dict[str, Any], tasks: int) -> None:
    print(f"\n== browser: {len(b['jobs'])} runs, warm cache, signed in ==")
    for i, (j, g) in enumerate(zip(b["jobs"], b["grid"], strict=True)):
        print(f"  run {i + 1}: jobs rows {j['rows']:.0f} ms (in page {j['in_page']:.0f}: html"
              f" {j['html']:.0f}, list {j['list_start']:.0f}-{j['list_end']:.0f}), clickable"
              f" {j['clickable']:.0f} ms, {j['count']} rows; grid {g['drawn']:.0f} ms (in page"
              f" {g['in_page']:.0f}: states {g['states_start']:.0f}-{g['states_end']:.0f}, drawn"
              f" {g['in_page'] - g['states_end']:.0f} after)")  # fmt: skip
    rows = [j["rows"] for j in b["jobs"]]
    clickable = [j["clickable"] for j in b["jobs"]]
    drawn = [g["drawn"] for g in b["grid"]]
    draw = [g["in_page"] - g["states_end"] for g in b["grid"]]
    cj, cg = b["cold_jobs"], b["cold_grid"]
    say("sign in (goto /, form, view shown)", f"{b['signin_ms']:.0f} ms")
    say("jobs table: goto -> first row", f"{p50max(rows)}   <= {TARGET_MS:.0f} ms"
        f"  {verdict(max(rows) <= TARGET_MS)}")  # fmt: skip
    say("jobs table: goto -> first link clickable", p50max(clickable))
    say("jobs table, in page (navigation -> frame)", p50max([j["in_page"] for j in b["jobs"]]))
    say(f"frame grid of {tasks}: goto -> drawn", f"{p50max(drawn)}   <= {TARGET_MS:.0f} ms"
        f"  {verdict(max(drawn) <= TARGET_MS)}")  # fmt: skip
    say("frame grid, in page (navigation -> frame)", p50max([g["in_page"] for g in b["grid"]]))
    say("frame grid: states received -> drawn frame", p50max(draw))
    say("cold (empty cache): jobs rows / clickable", f"{cj['rows']:.0f} / {cj['clickable']:.0f}"
        " ms")  # fmt: skip
    say("cold (empty cache): frame grid drawn", f"{cg['drawn']:.0f} ms")
    if b["page_errors"]:
        say("page errors", "; ".join(b["page_errors"][:3]))
    SUMMARY["browser"] = {
        "runs": len(rows), "signin_ms": b["signin_ms"],
        "jobs_rows_ms": {"p50": statistics.median(rows), "max": max(rows), "all": rows},
        "jobs_clickable_ms": {"p50": statistics.median(clickable), "max": max(clickable)},
        "grid_drawn_ms": {"p50": statistics.median(drawn), "max": max(drawn), "all": drawn},
        "grid_states_to_frame_ms": {"p50": statistics.median(draw), "max": max(draw)},
        "cold_jobs_rows_ms": cj["rows"], "cold_grid_drawn_ms": cg["drawn"],
        "target_ms": TARGET_MS, "page_errors": b["page_errors"],
    }  # fmt: skip


# The event streams' client: one asyncio process, run as this script with
# --stream-client; commands on stdin like the load generators' (stats, quit).


async def streamClient(args: argparse.Namespace) -> None:
    n = args.streams
    st: dict[str, Any] = {"open": 0, "failed": 0, "ended": 0, "bytes": 0, "hellos": 0,
                          "events": [0] * n, "first_error": "", "closes": {},
                          "parsed": 0, "repeats": 0}  # fmt: skip
    last: dict[int, bytes] = {}  # the first stream's last event of each job
    marker = b"event: job\ndata: "
    job, hello = b"event: job\n", b"event: hello\n"
    request = (
        f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
        f"Authorization: Bearer {ADMIN}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()

    async def one(i: int) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise OSError(head.split(b"\r\n")[0].decode())
            a = b = pending = b""  # what may begin a pattern or a frame cut by a read
            while data := await reader.read(1 << 16):
                st["bytes"] += len(data)
                if i == 0:  # one stream's events parsed: how many repeat the last
                    *frames, pending = (pending + data).split(b"\n\n")
                    for f in frames:
                        if (k := f.find(marker)) >= 0:
                            payload = f[k + len(marker) :]
                            key = json.loads(payload)["id"]
                            st["parsed"] += 1
                            st["repeats"] += last.get(key) == payload
                            last[key] = payload
                a, b = a + data, b + data
                st["events"][i] += a.count(job)
                if b.count(hello):
                    st["hellos"] += b.count(hello)
                    st["open"] += 1
                a, b = a[-(len(job) - 1) :], b[-(len(hello) - 1) :]
            st["ended"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            st["failed"] += 1
            st["first_error"] = st["first_error"] or repr(e)

    loop = asyncio.get_running_loop()
    tasks = set()
    for i in range(n):
        tasks.add(loop.create_task(one(i)))
        await asyncio.sleep(1 / args.rate)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (line := (await reader.readline()).strip()) not in (b"", b"quit"):
        if line == b"stats":
            sys.stdout.write(json.dumps(st) + "\n")
            sys.stdout.flush()
    os._exit(0)


class StreamLoads(Loads):
    """
    The event streams' client process (talkback_bench's Loads: stats, quit).
    """

    def __init__(self, port: int, count: int, rate: float = 200) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--stream-client",
                   "--port", str(port), "--streams", str(count), "--rate", str(rate)]  # fmt: skip
        pipe = subprocess.PIPE
        self.procs = [subprocess.Popen(command, stdin=pipe, stdout=pipe, text=True)]
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    def one(self) -> dict[str, Any]:
        found: dict[str, Any] = self.each()[0]
        return found


def submitWork(port: int, count: int, tasks: int, threads: int = 4) -> list[int]:
    """
    C{count} jobs of C{tasks} no-op tasks, priority 100 (ahead of the
    seeded queued jobs), from 4 threads.
    """

    def worker(share: range) -> list[int]:
        client = Client(port)
        try:
            return [client.request("POST", "/api/v1/jobs", {
                "title": f"work {i}", "command": ["true"], "frames": f"1-{tasks}",
                "priority": 100, "project": PROJECTS[i % len(PROJECTS)]}, 201)["id"]
                for i in share]  # fmt: skip
        finally:
            client.close()

    with ThreadPoolExecutor(threads) as pool:
        return [i for part in pool.map(worker, [range(k, count, threads) for k in range(threads)])
                for i in part]  # fmt: skip


def queued(db: Any, ids: list[int]) -> int:
    with db.cursor() as c:
        c.execute("SELECT coalesce(sum(n_queued), 0) FROM jobs WHERE id = ANY (%s)", (ids,))
        return int(c.fetchone()[0])


def window(label: str, seconds: float, proc: psutil.Process, loads: AgentLoads, pg: Postgres,
           streams: StreamLoads | None, db: Any, work: list[int]) -> dict[str, Any]:  # fmt: skip
    """
    The master's CPU and RSS, the others' CPU, lifecycles and events over
    C{seconds}.
    """

    def sample() -> dict[str, Any]:
        st, agents = streams.one() if streams else None, loads.stats()
        return {"t": time.monotonic(), "cpu": cpu([proc]), "gen": cpu(loads.ps), "pg": pg.cpu(),
                "streams": cpu(streams.ps) if streams else 0.0, "machine": psutil.cpu_times(),
                "done": agents.get("done", 0), "agents": agents, "st": st}  # fmt: skip

    loads.window()  # the agents' done -> next assign latencies, from here
    first = sample()
    rss = [proc.memory_info().rss]
    while time.monotonic() - first["t"] < seconds - 0.5:
        time.sleep(min(1.0, max(0.0, first["t"] + seconds - time.monotonic())))
        rss.append(proc.memory_info().rss)
    end = sample()
    wall = end["t"] - first["t"]
    share = {k: (end[k] - first[k]) / wall * 100 for k in ("cpu", "gen", "pg", "streams")}
    busy = 1 - (idle(end["machine"]) - idle(first["machine"])) / (
        sum(end["machine"]) - sum(first["machine"]))  # fmt: skip
    lifecycles = (end["done"] - first["done"]) / wall
    m: dict[str, Any] = {
        "label": label, "wall_s": wall, "master_cpu_pct": share["cpu"],
        "rss_mb_max": max(rss) / 1e6, "rss_mb_end": rss[-1] / 1e6,
        "agents_cpu_pct": share["gen"], "pg_cpu_pct": share["pg"],
        "stream_client_cpu_pct": share["streams"],
        "machine_busy_pct": busy * (psutil.cpu_count() or 1) * 100,
        "lifecycles_per_s": lifecycles,
        "master_cpu_ms_per_lifecycle": share["cpu"] * 10 / max(lifecycles, 1e-9),
        "work_left_queued": queued(db, work),
        # How soon the master's reactor answers: the agents' WebSocket pings
        # (10 a second), and a free slot's next assign.
        "probe_ms": end["agents"]["rtt_ms"], "free_to_assign_ms": end["agents"]["free_ms"],
    }  # fmt: skip
    if streams:
        a, b = first["st"], end["st"]
        per = [(y - x) / wall for x, y in zip(a["events"], b["events"], strict=True)]
        m.update({"streams_open": b["open"], "streams_ended": b["ended"],
                  "streams_failed": b["failed"],
                  "events_per_stream_s": {"mean": statistics.mean(per), "min": min(per),
                                          "max": max(per)},
                  "bytes_per_s": (b["bytes"] - a["bytes"]) / wall,
                  "repeated_share": (b["repeats"] - a["repeats"])
                                    / max(1, b["parsed"] - a["parsed"])})  # fmt: skip
    print(f"  {label}: {wall:.1f} s, master CPU {share['cpu']:.1f} %, RSS {max(rss) / 1e6:.0f} MB,"
          f" {lifecycles:.0f} lifecycles/s, machine busy {m['machine_busy_pct']:.0f} %",
          flush=True)  # fmt: skip
    return m


def reportWindows(ws: list[dict[str, Any]], streams: int, agents: int) -> None:
    base, on, after = ws
    print(f"\n== event streams: {agents} agents working, {streams} streams vs none ==")
    print(f"{'window':>12}{'s':>6}{'master %':>10}{'RSS MB':>8}{'lc/s':>7}{'ms/lc':>7}"
          f"{'agents %':>9}{'pg %':>6}{'client %':>9}{'busy %':>8}{'probe p50/max':>15}"
          f"{'free->assign p50/p99':>22}")  # fmt: skip
    for w in ws:
        probe, free = w["probe_ms"], w["free_to_assign_ms"]
        print(f"{w['label']:>12}{w['wall_s']:6.1f}{w['master_cpu_pct']:10.1f}"
              f"{w['rss_mb_max']:8.0f}{w['lifecycles_per_s']:7.0f}"
              f"{w['master_cpu_ms_per_lifecycle']:7.2f}{w['agents_cpu_pct']:9.1f}"
              f"{w['pg_cpu_pct']:6.1f}{w['stream_client_cpu_pct']:9.1f}"
              f"{w['machine_busy_pct']:8.0f}{probe[0]:9.1f}/{probe[1]:<5.0f}"
              f"{free[0]:14.1f}/{free[2]:<7.0f}")  # fmt: skip
    mean0 = (base["master_cpu_pct"] + after["master_cpu_pct"]) / 2
    say("master CPU, no stream (before / after)", f"{base['master_cpu_pct']:.1f} /"
        f" {after['master_cpu_pct']:.1f} % of one core")  # fmt: skip
    say(f"master CPU, {streams} streams", f"{on['master_cpu_pct']:.1f} % of one core")
    say("streams' cost (vs mean of the two)", f"{on['master_cpu_pct'] - mean0:+.1f} points,"
        f" ratio {on['master_cpu_pct'] / max(mean0, 1e-9):.2f}")  # fmt: skip
    say("master RSS max, no stream / streams", f"{base['rss_mb_max']:.0f} / {on['rss_mb_max']:.0f}"
        f" MB ({on['rss_mb_max'] - base['rss_mb_max']:+.0f})")  # fmt: skip
    e = on["events_per_stream_s"]
    say("events per stream per second", f"mean {e['mean']:.2f} (min {e['min']:.2f}, max"
        f" {e['max']:.2f}); {on['bytes_per_s'] / 1e3:.0f} kB/s in all")  # fmt: skip
    say("events repeating the job's previous one", f"{on['repeated_share'] * 100:.0f} % (same"
        " state and counts; one stream parsed)")  # fmt: skip
    say("agents' ping round trip, none / streams", f"p50 {base['probe_ms'][0]:.1f} /"
        f" {on['probe_ms'][0]:.1f} ms, max {base['probe_ms'][1]:.0f} /"
        f" {on['probe_ms'][1]:.0f} ms")  # fmt: skip
    say("free slot -> assign p99, none / streams", f"{base['free_to_assign_ms'][2]:.0f} /"
        f" {on['free_to_assign_ms'][2]:.0f} ms")  # fmt: skip
    say("streams open / ended / failed", f"{on['streams_open']} / {on['streams_ended']} /"
        f" {on['streams_failed']} of {streams}")  # fmt: skip
    for w in ws:
        if w["work_left_queued"] == 0:
            say("WARNING", f"the work ran out in window {w['label']}: raise --work-jobs")
    SUMMARY["streams"] = {"streams": streams, "agents": agents, "windows": ws,
                          "cost_points": on["master_cpu_pct"] - mean0,
                          "ratio": on["master_cpu_pct"] / max(mean0, 1e-9)}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    # What the machine's other users take (a shared machine: figures are noisy).
    other = psutil.cpu_percent(interval=2.0) * (psutil.cpu_count() or 1)
    say("machine busy before the benchmark", f"{other:.0f} % of {psutil.cpu_count()} cores"
        f" x 100 (load average {os.getloadavg()[0]:.2f})")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="masterd-dashboard-bench-"))
    masterLog, popen = tmp / "master.log", None
    loads: AgentLoads | None = None
    streams: StreamLoads | None = None
    good = True
    try:
        port = freePort()
        config = tmp / "master.yaml"
        limit = max(1_000_000, args.grid_tasks)
        config.write_text(CONFIG.format(port=port, tmp=tmp, admin=ADMIN)
                          + f"limits: {{max_frames_per_job: {limit}}}\n" + args.config)  # fmt: skip
        # The repository on the path: an editable install leaves the twistd
        # plugin (twisted/plugins/masterd_plugin.py) out of Twisted's own.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
        command = [twistd(), "-n", "--pidfile=", "masterd", "-c", str(config)]
        with masterLog.open("wb") as log:
            popen = subprocess.Popen(command, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                                     env=env)  # fmt: skip
        startup = waitFor(f"http://127.0.0.1:{port}/readyz", popen, 60.0)
        base, proc = f"http://127.0.0.1:{port}", psutil.Process(popen.pid)
        say("master ready", f"{startup:.1f} s (pid {popen.pid}, log {masterLog})")
        SUMMARY["machine"] = {"cores": psutil.cpu_count(), "python": sys.version.split()[0],
                              "busy_before_pct": other}  # fmt: skip
        SUMMARY["args"] = vars(args)
        pg = Postgres(tmp / "pgdata")
        with closing(psycopg2.connect(pg.dsn)) as db:
            client = Client(port)
            t0 = time.perf_counter()
            agents = seedAgents(db, args.agent_rows)
            template = client.request("POST", "/api/v1/jobs", {
                "title": "aurora shot template lighting", "command": ["true"],
                "frames": "1"}, 201)["id"]  # fmt: skip
            found = seedJobs(db, template, args.jobs - 1, agents)
            seeded = time.perf_counter() - t0
            say(f"seeded {args.jobs} jobs, {args.agent_rows} agents", f"{seeded:.1f} s (SQL);"
                f" jobs by state {found}")  # fmt: skip
            t0 = time.perf_counter()
            spec = {
                "title": f"delta shot 0420 fx sim ({args.grid_tasks} frames)",
                "command": ["true"],
                "frames": f"1-{args.grid_tasks}",
                "paused": True,
            }
            grid = client.request("POST", "/api/v1/jobs", spec, 201)
            posted = time.perf_counter() - t0
            mixGrid(db, grid["id"], agents)
            db.autocommit = True
            with db.cursor() as c:
                c.execute("VACUUM ANALYZE")
            say(f"POST of the job of {args.grid_tasks} tasks", f"{posted:.2f} s (job {grid['id']},"
                " paused; then 70 % done, 1 % failed in SQL)")  # fmt: skip
            client.close()
            SUMMARY["seed"] = {"jobs": args.jobs, "agents": args.agent_rows, "seconds": seeded,
                               "by_state": found, "grid_job": grid["id"],
                               "grid_tasks": args.grid_tasks, "grid_post_s": posted}  # fmt: skip

            s = timeStates(port, grid["id"], args.runs)
            sql = statesSQL(db, grid["id"], args.runs)
            say("GET states: size", f"{s['bytes']:,} bytes ({s['tasks']} tasks,"
                f" {s['bytes'] / s['tasks']:.2f} bytes a task)")  # fmt: skip
            say("GET states: to the headers (server time)", p50max(s["head_ms"]))
            say("GET states: to the whole body", p50max(s["whole_ms"]))
            say("GET states: its SQL alone", p50max(sql))
            SUMMARY["states"] = {**s, "sql_ms": sql}

            b = browse(base, args.runs, grid["id"], args.grid_tasks)
            reportBrowser(b, args.grid_tasks)
            if b["page_errors"]:
                good = False

            need = args.agents / args.hold * (3 * args.window + 40) * 1.3
            count = math.ceil(need / args.work_tasks)
            t0 = time.perf_counter()
            work = submitWork(port, count, args.work_tasks)
            say("work submitted", f"{count} jobs of {args.work_tasks} tasks in"
                f" {time.perf_counter() - t0:.1f} s")  # fmt: skip
            print(f"\n{args.agents} agents connecting (tasks of {args.hold:g} s on average)")
            loads = AgentLoads(port, args.agents, 500, args.hold)
            ramp(argparse.Namespace(connections=args.agents, rate=500), popen, loads)
            time.sleep(max(3.0, 2 * args.hold))
            windows = [window("no stream", args.window, proc, loads, pg, None, db, work)]
            streams = StreamLoads(port, args.streams)
            t0 = time.monotonic()
            while (st := streams.one())["open"] + st["failed"] < args.streams:
                if time.monotonic() - t0 > 60:
                    raise BenchFailure(f"{args.streams - st['open']} streams got no hello")
                time.sleep(0.5)
            if st["failed"]:
                raise BenchFailure(f"{st['failed']} streams failed: {st['first_error']}")
            say(f"{args.streams} streams open", f"{time.monotonic() - t0:.1f} s")
            time.sleep(2)
            windows.append(window(f"{args.streams} streams", args.window, proc, loads, pg, streams,
                                  db, work))  # fmt: skip
            streams.quit()
            streams = None
            time.sleep(3)
            windows.append(window("none again", args.window, proc, loads, pg, None, db, work))
            end = loads.stats()
            loads.quit()
            loads = None
            reportWindows(windows, args.streams, args.agents)
            say("agents dropped / errors", f"{end.get('dropped', 0)} / "
                f"{end.get('error_messages', 0)}")  # fmt: skip
            good = good and not end.get("dropped") and not windows[1]["streams_failed"]
        lines = masterLog.read_text(errors="replace").splitlines()
        suspicious = [i for i, line in enumerate(lines) if _SUSPICIOUS.search(line)]
        if suspicious:
            print(f"master log: {len(suspicious)} suspicious lines; the first, and what follows:")
            print("\n".join(lines[suspicious[0] : suspicious[0] + 30]))
        print("\nJSON " + json.dumps(SUMMARY, default=str))
        return 0 if good else 1
    except (BenchFailure, jobs_bench.BenchFailure, RuntimeError, OSError, psycopg2.Error,
            http.client.HTTPException) as e:  # fmt: skip
        print(f"FAIL: {e.__class__.__name__}: {e}")
        if popen is not None and popen.poll() is not None:
            print(f"the master exited with status {popen.returncode}")
        print(f"--- tail of {masterLog} ---\n{tail(masterLog)}")
        return 1
    finally:
        for other in (loads, streams):
            if other is not None:
                other.quit()
        stop(popen, 60)
        stopOrphan(tmp / "pgdata")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"whole benchmark: {time.monotonic() - began:.0f} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    add = parser.add_argument
    add("--quick", action="store_true", help="a smoke run: 500 jobs, 10,000 tasks, 100 agent"
        " rows, 100 agents, 20 streams, 5 s windows, 3 runs")  # fmt: skip
    add("--jobs", type=int, help="seeded jobs (10000)")
    add("--grid-tasks", type=int, help="tasks of the frame grid's job (100000)")
    add("--agent-rows", type=int, help="seeded offline agents (1000)")
    add("--runs", type=int, help="timed page loads of each view (5)")
    add("--agents", type=int, help="no-op agents working during the stream windows (200)")
    add("--streams", type=int, help="open event streams (200)")
    add("--window", type=float, help="each measured window, s (20)")
    add("--hold", type=float, default=1.0, help="mean task time of the agents, s (1)")
    add("--work-tasks", type=int, default=20, help="tasks a work job (20; enough jobs are"
        " submitted for the windows)")  # fmt: skip
    add("--config", default="", help="YAML appended to the master's config")
    add("--keep", action="store_true", help="keep the master's directory (log, data)")
    add("--stream-client", action="store_true", help=argparse.SUPPRESS)
    add("--port", type=int, help=argparse.SUPPRESS)
    add("--rate", type=float, default=200, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.stream_client:
        asyncio.run(streamClient(args))
        return 0
    full = {"jobs": 10_000, "grid_tasks": 100_000, "agent_rows": 1000, "runs": 5, "agents": 200,
            "streams": 200, "window": 20.0}  # fmt: skip
    quick = {"jobs": 500, "grid_tasks": 10_000, "agent_rows": 100, "runs": 3, "agents": 100,
             "streams": 20, "window": 5.0}  # fmt: skip
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.jobs < 2 or args.runs < 1 or args.grid_tasks < 1 or args.streams < 1:
        parser.error("--jobs must be at least 2; --runs, --grid-tasks, --streams at least 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
