"""
masterctl's subcommands: each reads its parsed arguments, asks the master
through the client, and prints either the server's JSON (C{--json}) or a
view for a person. Each returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

from ._client import Client
from ._context import Context, UsageError
from ._farm import layers_table, shows_layers
from ._jobfile import job_body, openjd_job_body
from ._openjd import check_openjd
from ._output import (
    ago_text,
    cell_text,
    command_text,
    dump_json,
    duration_text,
    frames_text,
    io_text,
    key_values,
    mib_text,
    percent,
    shell_word,
    shorten,
    table,
    time_text,
    title_text,
    usage_text,
)
from ._watch import follow_log, watch_job
from .models import Agent, Attempt, Job, Master, Task

T = TypeVar("T")

#: The server's largest page.
MAX_PAGE = 500
ERROR_WIDTH = 60


def _first(items: Iterator[T], limit: int) -> list[T]:
    """
    The first C{limit} items, or all of them for 0.
    """
    return list(items if limit == 0 else islice(items, limit))


def _page_size(limit: int) -> int:
    return MAX_PAGE if limit == 0 else min(limit, MAX_PAGE)


def _list_json(records: Iterable[Job | Task | Agent]) -> str:
    return dump_json({"items": [record.raw for record in records]})


# -- jobs -------------------------------------------------------------------


def submit(context: Context, args: argparse.Namespace) -> int:
    if args.openjd is not None:
        body, directory = openjd_job_body(args, context.runtime.stdin)
        check_openjd(body, directory)  # with openjd-model installed; the master checks anyway
        job = context.client.submit_body(body)
    else:
        job = context.client.submit_body(job_body(args, context.runtime.stdin))
    if args.watch:
        if not context.json:
            context.note(f"submitted job {job.id}")
        return _watch_to_end(context, job, args.interval)
    if args.quiet:
        context.write(f"{job.id}\n")
        return 0
    layers = job.layers
    counted = f"{len(layers)} layers, " if shows_layers(layers) else ""
    context.emit(
        job.raw,
        lambda: (
            f"submitted job {job.id}: {title_text(job.title)} ({counted}"
            f"{job.task_counts.total} tasks, {job.state})\n"
        ),
    )
    return 0


def jobs(context: Context, args: argparse.Namespace) -> int:
    found = _first(
        context.client.jobs(
            state=args.state, owner=args.owner, project=args.project, limit=_page_size(args.limit)
        ),
        args.limit,
    )
    if context.json:
        context.write(_list_json(found))
    elif not found:
        context.note("no jobs")
    else:
        context.write(jobs_table(found))
    return 0


def jobs_table(found: list[Job]) -> str:
    return table(
        ["ID>", "STATE", "PRI>", "DONE/TOTAL>", "OWNER", "TITLE"],
        [
            [j.id, j.state, j.priority, f"{j.task_counts.done}/{j.task_counts.total}", j.owner,
             j.title]
            for j in found
        ],
    )  # fmt: skip


def job(context: Context, args: argparse.Namespace) -> int:
    if args.archived is not None:
        return archived_job(context, args.archived)
    if args.job_id is None:
        raise UsageError("job: give a JOB_ID, or --archived FILE")
    found = context.client.job(args.job_id)
    if args.watch:
        return _watch_to_end(context, found, args.interval)
    context.emit(found.raw, lambda: job_details(found))
    return 0


def archived_job(context: Context, path: str) -> int:
    """
    masterctl job --archived FILE: the job of an archive, as masterctl job
    shows a live one, and what else the archive holds.
    """
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or e
        raise UsageError(f"{path}: cannot read an archive: {reason}") from None
    if not isinstance(document, dict) or document.get("format") != "masterd-archive/1":
        raise UsageError(f"{path}: not a masterd archive (no format masterd-archive/1)")
    found = Job(context.client._transport, document.get("job") or {})
    tasks, attempts = document.get("tasks") or [], document.get("attempts") or []
    logs = document.get("logs")
    summary = (
        f"archived {document.get('archived_at')}: {len(tasks)} tasks, {len(attempts)} attempts"
        + (f", logs of {len(logs)} attempts" if logs else ", no logs")
    )
    context.emit(found.raw, lambda: job_details(found) + "\n" + summary + "\n")
    return 0


def archive(context: Context, args: argparse.Namespace) -> int:
    """
    masterctl archive JOB: save a finished job's archive, here or (with
    --on-master) in the master's retention.archive_dir.
    """
    if args.on_master:
        written = context.client.write_archive(args.job_id)
        context.emit(written, lambda: f"{written['path']} ({written['bytes']} bytes)\n")
        return 0
    document = context.client.archive(args.job_id, logs=args.logs)
    data = json.dumps(document, ensure_ascii=False, indent=1) + "\n"
    target = args.output or f"job-{args.job_id}.json"
    if target == "-":
        context.write(data)
        return 0
    directory = os.path.dirname(os.path.abspath(target))
    try:
        fd, temporary = tempfile.mkstemp(prefix=".masterctl-", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(data)
        os.replace(temporary, target)
    except OSError as e:
        raise UsageError(f"{target}: cannot write the archive: {e.strerror or e}") from None
    count = len(document.get("tasks") or [])
    context.note(f"job {args.job_id}: {count} tasks written to {target}")
    return 0


def _watch_to_end(context: Context, found: Job, interval: float) -> int:
    # With --json, one document: the job as it finished, no progress lines.
    status = watch_job(context, found, interval, show=not context.json)
    if context.json:
        context.write(dump_json(found.raw))
    return status


def job_details(found: Job) -> str:
    counts = found.task_counts
    requirements = found.requirements
    needs = [f"{requirements.cpus} cpus", f"{requirements.ram_mb} MB ram",
             f"{requirements.gpus} gpus"]  # fmt: skip
    if requirements.gpu_memory_mb:
        needs.append(f"{requirements.gpu_memory_mb} MB per gpu")
    if requirements.tags:
        needs.append("tags " + ",".join(requirements.tags))
    blocked = [f"{agent_text(b['agent_id'], b['hostname'])}, {b['failures']} failures"
               for b in found.blocklist]  # fmt: skip
    metadata = json.dumps(found.metadata, ensure_ascii=False) if found.metadata else None
    timeout = duration_text(found.task_timeout_s)
    if found.stall_timeout_s is not None:
        timeout += f" (stalled: {duration_text(found.stall_timeout_s)} without a log line)"
    layers = found.layers
    text = f"job {found.id}: {title_text(found.title)}\n" + key_values(
        [
            ("state", found.state),
            ("owner", found.owner),
            ("project", found.project),
            (
                "priority",
                f"{found.priority} (weight {found.weight})"
                + (", preemptible" if found.preemptible else ""),
            ),
            ("progress", f"{percent(found.progress)}, {counts.done}/{counts.total} tasks done"),
            ("tasks", ", ".join(f"{n} {getattr(counts, n)}" for n in TASK_COUNTS)),
            ("command", command_text(found.command or []) or None),
            ("cwd", found.cwd),
            # As --env takes them: NAME=VALUE, quoted as one word if need be.
            ("env", " ".join(shell_word(f"{k}={v}") for k, v in sorted(found.env.items())) or None),
            ("requirements", ", ".join(needs)),
            ("limits", ", ".join(found.limits) or None),
            ("max running", found.max_running),
            ("max retries", found.max_retries),
            ("task timeout", timeout),
            ("parents", ", ".join(map(str, found.parent_ids)) or None),
            ("children", ", ".join(map(str, found.child_ids)) or None),
            ("blocklist", "; ".join(blocked) or None),
            ("created", time_text(found.created_at)),
            ("updated", time_text(found.updated_at)),
            ("finished", time_text(found.finished_at)),
            ("metadata", metadata),
            ("usage", job_usage_text(found.usage)),
        ]
    )
    if shows_layers(layers):
        text += "\nlayers:\n" + layers_table(layers)
        used = [(layer.name, job_usage_text(layer.usage)) for layer in layers if layer.usage]
        if used:
            text += "\nusage by layer:\n" + key_values(used)
    for layer in layers:
        exceeded = (layer.usage or {}).get("ram_exceeded")
        if exceeded:
            text += f"\nwarning: layer {layer.name}: {exceeded}"
    return text


def job_usage_text(usage: dict[str, Any] | None) -> str | None:
    """
    C{1.25 core-hours, peak 3.9 GiB (p95 3.1 GiB), tasks 2m05s mean, 3m10s
    p95, 40 attempts}: what a job's or a layer's attempts used.
    """
    if not usage:
        return None
    parts = [f"{usage.get('core_hours', 0):.2f} core-hours"]
    if usage.get("peak_rss_mb") is not None:
        peak = f"peak {mib_text(usage['peak_rss_mb'])}"
        if usage.get("peak_rss_p95_mb") is not None:
            peak += f" (p95 {mib_text(usage['peak_rss_p95_mb'])})"
        parts.append(peak)
    if usage.get("gpu_memory_mb") is not None:
        parts.append(f"gpu memory {mib_text(usage['gpu_memory_mb'])}")
    if usage.get("task_s_mean") is not None:
        parts.append(f"tasks {duration_text(usage['task_s_mean'])} mean,"
                     f" {duration_text(usage.get('task_s_p95'))} p95")  # fmt: skip
    parts.append(f"{usage.get('attempts', 0)} attempts")
    return ", ".join(parts)


TASK_COUNTS = ("waiting", "queued", "assigned", "running", "done", "failed", "canceled")


def steer(context: Context, args: argparse.Namespace) -> int:
    """
    cancel, pause, resume and retry: one change to a job.
    """
    found = context.client.job(args.job_id)
    if args.action == "cancel":
        found.cancel()
    elif args.action == "pause":
        found.pause(stop_running=args.stop_running)
    elif args.action == "resume":
        found.resume()
    else:
        found.retry()
    counts = found.task_counts
    past = {"cancel": "canceled", "pause": "paused", "resume": "resumed", "retry": "retried"}
    context.emit(
        found.raw,
        lambda: (
            f"job {found.id} {past[args.action]}: now {found.state},"
            f" {counts.done}/{counts.total} tasks done\n"
        ),
    )
    if args.action == "retry" and found.paused:
        # A retry does not resume: say so, or the operator waits in vain.
        context.note(
            f"job {found.id} is paused: its retried tasks wait until `masterctl resume {found.id}`"
        )
    return 0


# -- tasks ------------------------------------------------------------------


def tasks(context: Context, args: argparse.Namespace) -> int:
    parent = context.client.job(args.job_id)
    names = [layer.name for layer in parent.layers]
    if args.layer is not None and names and args.layer not in names:
        # Else the master answers an empty list, which reads as "no tasks".
        raise UsageError(
            f"--layer: job {parent.id} has no layer {args.layer!r}; it has {', '.join(names)}"
        )
    found = _first(
        parent.tasks(state=args.state, layer=args.layer, limit=_page_size(args.limit)), args.limit
    )
    if context.json:
        context.write(_list_json(found))
    elif not found:
        context.note(f"job {parent.id} has no tasks" + (f" {args.state}" if args.state else "")
                     + (f" in layer {args.layer}" if args.layer else ""))  # fmt: skip
    else:
        context.write(tasks_table(found))
    return 0


def tasks_table(found: list[Task]) -> str:
    # The layer only where there is more than the one of a plain job.
    layered = any(t.layer != "main" for t in found)
    rows = [
        [t.id, t.index, t.state, frames_text(t.frames), t.attempt, percent(t.progress),
         t.agent_id, t.agent_hostname, t.exit_code, shorten(t.error, ERROR_WIDTH)]
        for t in found
    ]  # fmt: skip
    headers = ["ID>", "INDEX>", "STATE", "FRAMES", "ATTEMPT>", "PROGRESS>", "AGENT", "HOSTNAME",
               "EXIT>", "ERROR"]  # fmt: skip
    if layered:
        headers.insert(1, "LAYER")
        for row, t in zip(rows, found):
            row.insert(1, t.layer)
    return table(headers, rows)


def task(context: Context, args: argparse.Namespace) -> int:
    if args.done and not args.retry:
        raise UsageError("--done goes with --retry: masterctl task ID --retry --done")
    found = context.client.task(args.task_id)
    if args.cancel:
        found.cancel()
    elif args.retry:
        found.retry(done=args.done)
    if context.json:
        context.write(dump_json(found.raw))
        return 0
    context.write(task_details(found) + "\n" + attempts_table(found.attempts()))
    return 0


def task_details(found: Task) -> str:
    return f"task {found.id}: job {found.job_id}, index {found.index}\n" + key_values(
        [
            ("layer", found.layer),
            ("state", found.state),
            ("frames", frames_text(found.frames, 200)),
            ("command", command_text(found.command) if found.command else "(the job's)"),
            ("attempt", found.attempt),
            ("agent", agent_text(found.agent_id, found.agent_hostname)),
            ("progress", percent(found.progress)),
            ("started", time_text(found.started_at)),
            ("finished", time_text(found.finished_at)),
            ("exit code", found.exit_code),
            ("error", found.error),
            *_openjd_rows(found.raw),
        ]
    )


def _openjd_rows(raw: dict) -> list:  # type: ignore[type-arg]
    """
    An OpenJD task's status (its openjd_status line) and parameter values.
    """
    rows: list = []  # type: ignore[type-arg]
    if raw.get("status"):
        rows.append(("status", raw["status"]))
    if raw.get("parameters"):
        rows.append(("parameters", _parameters_text(raw["parameters"])))
    return rows


def _parameters_text(parameters: dict) -> str:  # type: ignore[type-arg]
    return ", ".join(
        f"{name}={value.get('value')}" if isinstance(value, dict) else f"{name}={value}"
        for name, value in sorted(dict(parameters).items())
    )


def attempts_table(found: list[Attempt]) -> str:
    if not found:
        return "no attempts yet\n"
    rows = [
        [a.attempt, a.state, a.agent_id, a.agent_hostname, time_text(a.started_at),
         time_text(a.finished_at), a.exit_code, shorten(a.error, ERROR_WIDTH)]
        for a in found
    ]  # fmt: skip
    headers = ["ATTEMPT>", "STATE", "AGENT", "HOSTNAME", "STARTED", "FINISHED", "EXIT>", "ERROR"]
    if any(a.gpu_devices for a in found):
        # The devices it was given: CUDA_VISIBLE_DEVICES on the agent.
        headers.insert(4, "GPUS")
        for row, a in zip(rows, found):
            row.insert(4, ",".join(map(str, a.gpu_devices)))
    return table(headers, rows)


def log(context: Context, args: argparse.Namespace) -> int:
    found = context.client.task(args.task_id)
    if args.follow:
        return follow_log(context, found, args.attempt, args.after, args.interval)
    if found.attempt == 0 and args.attempt is None:
        context.note(f"task {found.id} is {found.state} and has not run yet: no log")
        return 0
    context.write(found.log(args.attempt, args.after))
    return 0


# -- agents -----------------------------------------------------------------


def agents(context: Context, args: argparse.Namespace) -> int:
    found = _first(
        context.client.agents(state=args.state, tag=args.tag, limit=_page_size(args.limit)),
        args.limit,
    )
    if context.json:
        context.write(_list_json(found))
    elif not found:
        context.note("no agents")
    else:
        context.write(agents_table(found, context.runtime.now()))
    return 0


def agents_table(found: list[Agent], now: datetime) -> str:
    return table(
        ["ID", "HOSTNAME", "STATE", "CPUS>", "RAM MB>", "GPUS>", "SLOTS>", "TAGS", "LAST SEEN"],
        [
            [a.id, a.hostname, a.state, a.cpus, a.ram_mb, a.gpus,
             a.limits.get("max_tasks"), ",".join(a.tags), ago_text(a.last_seen, now)]
            for a in found
        ],
    )  # fmt: skip


def agent_text(agent_id: str | None, hostname: str | None) -> str | None:
    """
    An agent as masterctl shows it beside other fields: its id and, when
    known, its hostname (C{6f1c0b9e-... (node-017)}).
    """
    if agent_id is None:
        return None
    return f"{agent_id} ({hostname})" if hostname else agent_id


def find_agent(client: Client, name: str) -> Agent:
    """
    An agent by id; by hostname (what operators know a machine by); or by
    a unique prefix of its id (C{6f1c}). Hostnames and prefixes are looked
    up in the list of agents; a name that matches no agent, or several, is
    a L{UsageError}.
    """
    try:
        uuid.UUID(name)
    except ValueError:
        pass
    else:
        return client.agent(name)
    if not name.strip():
        raise UsageError("give an agent id, a unique prefix of one, or a hostname")
    known = list(client.agents(limit=MAX_PAGE))
    named = [a for a in known if a.hostname == name]
    if len(named) > 1:
        ids = ", ".join(a.id for a in named)
        raise UsageError(f"{len(named)} agents are named {name!r}: {ids}")
    if named:
        return named[0]
    prefix = name.lower()
    matches = [a for a in known if a.id.lower().startswith(prefix)]
    if not matches:
        raise UsageError(f"no agent id starts with {name!r}, and no agent is named so")
    if len(matches) > 1:
        listed = ", ".join(agent_text(a.id, a.hostname) or a.id for a in matches)
        raise UsageError(f"{len(matches)} agent ids start with {name!r}: {listed}")
    return matches[0]


def agent(context: Context, args: argparse.Namespace) -> int:
    found = find_agent(context.client, args.agent_id)
    if args.disable:
        found.disable()
    elif args.enable:
        found.enable()
    elif args.reset_credential:
        found.reset_credential()
        context.note(
            f"agent {found.id}'s credential is reset: its next hello with an enrollment token"
            " (role agent) enrolls it again"
        )
    if context.json:
        context.write(dump_json(found.raw))
        return 0
    text = agent_details(found, context)
    current = found.current_tasks()
    text += "\ncurrent tasks:\n" + (tasks_table(current) if current else "none\n")
    failures = found.failures(limit=5)
    text += "\nlatest failures:\n" + (attempts_table(failures) if failures else "none\n")
    context.write(text)
    return 0


def agent_details(found: Agent, context: Context) -> str:
    now = context.runtime.now()
    limits = ", ".join(f"{k} {v}" for k, v in sorted(found.limits.items()))
    software = ", ".join(f"{k} {v}" for k, v in sorted(found.software.items()))
    return f"agent {found.id}: {found.hostname}\n" + key_values(
        [
            ("state", found.state),
            ("enabled", found.enabled),
            ("master", found.master),
            ("os", found.os),
            ("version", found.version),
            ("hardware", f"{found.cpus} cpus, {found.ram_mb} MB ram, {found.gpus} gpus"),
            ("tags", ", ".join(found.tags) or None),
            ("operator tags", ", ".join(found.operator_tags) or None),
            ("limits", limits or None),
            ("usage", usage_text(found.usage) or None),
            ("io since boot", io_text(found.usage) or None),
            ("software", software or None),
            ("connected", time_text(found.connected_at)),
            ("disconnected", time_text(found.disconnected_at)),
            ("last seen", ago_text(found.last_seen, now)),
        ]
    )


# -- the master ---------------------------------------------------------------


def stats(context: Context, args: argparse.Namespace) -> int:
    master = context.client.master()
    context.emit(master.raw, lambda: stats_text(master))
    return 0


def stats_text(master: Master) -> str:
    requests = master.requests
    database = master.database
    exceptions = master.exceptions
    pairs: list[tuple[str, object]] = [
        ("master", f"{master.name} {master.version}"),
        ("started", time_text(master.started_at)),
        ("uptime", duration_text(master.uptime_s)),
        ("requests", f"{requests.get('total', 0)} total, {requests.get('in_flight', 0)} in"
                     f" flight, avg {requests.get('avg_ms', 0)} ms, max"
                     f" {requests.get('max_ms', 0)} ms"),
        ("database", f"{database.get('queries', 0)} queries, avg {database.get('avg_ms', 0)} ms,"
                     f" {'ready' if database.get('ready') else 'NOT READY'}"),
        ("exceptions", exceptions.get("total", 0)),
    ]  # fmt: skip
    talkback = master.talkback
    if talkback is not None:
        pairs += [
            ("agents connected", talkback.get("agents_connected", 0)),
            ("talkback in", _counts(talkback.get("messages_in")) or None),
            ("talkback out", _counts(talkback.get("messages_out")) or None),
            ("talkback errors", talkback.get("errors", 0)),
            ("talkback bytes", f"{talkback.get('bytes_in', 0)} in, {talkback.get('bytes_out', 0)}"
                               " out"),
        ]  # fmt: skip
    text = key_values(pairs)
    routes = requests.get("by_route") or []
    if routes:
        text += "\n" + table(
            ["METHOD", "ROUTE", "STATUS>", "COUNT>", "AVG MS>", "MAX MS>"],
            [[r.get("method"), r.get("route"), r.get("status"), r.get("count"), r.get("avg_ms"),
              r.get("max_ms")] for r in routes],
        )  # fmt: skip
    recent = exceptions.get("recent") or []
    if recent:
        text += "\nrecent exceptions:\n" + table(
            ["AT", "ROUTE", "TYPE", "MESSAGE"],
            [[e.get("at"), e.get("route"), e.get("type"), shorten(e.get("message"), ERROR_WIDTH)]
             for e in recent],
        )  # fmt: skip
    return text


def _counts(counts: object) -> str:
    if not isinstance(counts, dict):
        return ""
    return ", ".join(f"{k} {cell_text(v)}" for k, v in sorted(counts.items()))
