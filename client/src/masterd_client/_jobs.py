"""
Jobs, their tasks, and the tasks' attempts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._base import (
    FINISHED_JOB_STATES,
    FINISHED_TASK_STATES,
    LogChunk,
    Record,
    Requirements,
    Resource,
    TaskCounts,
    iterate_pages,
    list_items,
    ref_href,
    ref_id,
    requirements_json,
)
from ._follow import LogFollower
from ._layers import Layer

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's since 3.11

    from ._agents import Agent


class _Ending(Record):
    """
    What tasks and attempts share: when they ran and how they ended.
    """

    @property
    def started_at(self) -> datetime | None:
        return self._time("started_at")

    @property
    def finished_at(self) -> datetime | None:
        return self._time("finished_at")

    @property
    def exit_code(self) -> int | None:
        return self.raw.get("exit_code")

    @property
    def error(self) -> str | None:
        return self.raw.get("error")


class Job(Resource):
    """
    A command over a set of frames, split into tasks; or several layers,
    each a command over frames, that may wait for one another.
    """

    @property
    def id(self) -> int:
        return int(self.raw["id"])

    @property
    def title(self) -> str:
        return str(self.raw["title"])

    @property
    def owner(self) -> str:
        return str(self.raw["owner"])

    @property
    def state(self) -> str:
        """
        C{waiting}, C{queued}, C{running}, C{paused}, C{done}, C{failed} or
        C{canceled}.
        """
        return str(self.raw["state"])

    @property
    def is_finished(self) -> bool:
        """
        Done, failed or canceled: nothing more will happen unless retried.
        """
        return self.state in FINISHED_JOB_STATES

    @property
    def priority(self) -> int:
        return int(self.raw["priority"])

    @property
    def weight(self) -> int:
        return int(self.raw.get("weight", 1))

    @property
    def paused(self) -> bool:
        return bool(self.raw.get("paused"))

    @property
    def created_at(self) -> datetime | None:
        return self._time("created_at")

    @property
    def updated_at(self) -> datetime | None:
        return self._time("updated_at")

    @property
    def finished_at(self) -> datetime | None:
        return self._time("finished_at")

    @property
    def progress(self) -> float:
        """
        Done tasks over all tasks, 0 to 1.
        """
        return float(self.raw.get("progress") or 0.0)

    @property
    def command(self) -> list[str] | None:
        command = self.raw.get("command")
        return list(command) if command is not None else None

    @property
    def env(self) -> dict[str, str]:
        return dict(self.raw.get("env") or {})

    @property
    def cwd(self) -> str | None:
        return self.raw.get("cwd")

    @property
    def requirements(self) -> Requirements:
        return Requirements.from_json(self.raw.get("requirements"))

    @property
    def max_retries(self) -> int:
        return int(self.raw.get("max_retries", 0))

    @property
    def task_timeout_s(self) -> int | None:
        return self.raw.get("task_timeout_s")

    @property
    def stall_timeout_s(self) -> int | None:
        """
        An attempt that sends no log line for this long is canceled (as a
        timeout); layers may set their own.
        """
        return self.raw.get("stall_timeout_s")

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.raw.get("metadata") or {})

    @property
    def project(self) -> str:
        """
        The project whose share of the farm it runs in (by default its
        owner); C{""} from a master that has no projects.
        """
        return str(self.raw.get("project") or "")

    @property
    def max_running(self) -> int | None:
        """
        At most this many of its tasks assigned or running at once.
        """
        return self.raw.get("max_running")

    @property
    def preemptible(self) -> bool:
        return bool(self.raw.get("preemptible"))

    @property
    def limits(self) -> list[str]:
        """
        The limits (licences) each of its tasks takes.
        """
        return list(self.raw.get("limits") or [])

    @property
    def layers(self) -> list[Layer]:
        """
        Its layers in order (a job submitted as one command has one, named
        C{main}; a master from before layers sends none).
        """
        return [Layer(self._transport, raw) for raw in self.raw.get("layers") or []]

    def layer(self, name: str) -> Layer:
        """
        The layer named C{name}.

        @raise KeyError: if it has none of that name.
        """
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"job {self.raw.get('id')} has no layer {name!r}")

    @property
    def usage(self) -> dict[str, Any] | None:
        """
        What its attempts used (the document's C{usage}: C{attempts},
        C{core_hours}, C{wall_hours}, C{peak_rss_mb}, C{peak_rss_p95_mb},
        C{gpu_memory_mb}, C{task_s_mean}, C{task_s_p95}); None in a listing,
        before any attempt reported it, or from a master that does not say.
        """
        usage = self.raw.get("usage")
        return dict(usage) if usage else None

    @property
    def task_counts(self) -> TaskCounts:
        """
        The number of tasks in each state (the document's C{tasks} object).
        """
        return TaskCounts.from_json(self.raw.get("tasks"))

    @property
    def parent_ids(self) -> list[int]:
        return [int(ref_id(ref)) for ref in self.raw.get("parents") or []]

    @property
    def child_ids(self) -> list[int]:
        return [int(ref_id(ref)) for ref in self.raw.get("children") or []]

    @property
    def blocklist(self) -> list[dict[str, Any]]:
        """
        The agents that get no more of this job's tasks: C{{"agent_id",
        "hostname", "failures"}} each (the hostname None from a master that
        does not send it, or for an agent deleted since).
        """
        return [
            {"agent_id": ref_id(entry.get("agent")), "hostname": _hostname(entry.get("agent")),
             "failures": entry.get("failures")}
            for entry in self.raw.get("blocklist") or []
        ]  # fmt: skip

    # -- following references --------------------------------------------

    def tasks(
        self, state: str | None = None, limit: int | None = None, layer: str | None = None
    ) -> Iterator[Task]:
        """
        Every task of the job in index order, or those in C{state} / of the
        layer named C{layer}; pages of C{limit} (1-500, the server's
        default 50) are fetched as the iteration goes.
        """
        href = ref_href(self.raw.get("tasks"), "tasks")
        query = {"state": state, "layer": layer, "limit": limit}
        return iterate_pages(self._transport, href, query, lambda raw: Task(self._transport, raw))

    def parents(self) -> list[Job]:
        """
        The jobs this one waits for (one request each).
        """
        return [self._job(ref) for ref in self.raw.get("parents") or []]

    def children(self) -> list[Job]:
        """
        The jobs that wait for this one (one request each).
        """
        return [self._job(ref) for ref in self.raw.get("children") or []]

    def _job(self, ref: object) -> Job:
        return Job(self._transport, self._transport.get_json(ref_href(ref, "job")))

    # -- changes ------------------------------------------------------------

    def cancel(self) -> Self:
        """
        Cancel every unfinished task; agents running one are told to stop.
        """
        return self._update(self._transport.send_json("POST", f"{self.href}/cancel"))

    def pause(self, stop_running: bool = False) -> Self:
        """
        Hand out no more tasks. Running tasks finish, unless C{stop_running}:
        then they are stopped and queued again (not counted as failures).
        """
        body: dict[str, Any] = {"paused": True}
        if stop_running:
            body["stop_running"] = True
        return self._update(self._transport.send_json("PATCH", self.href, body))

    def resume(self) -> Self:
        return self._update(self._transport.send_json("PATCH", self.href, {"paused": False}))

    def retry(self) -> Self:
        """
        Failed and canceled tasks back to queued (or waiting, if a parent is
        not done).
        """
        return self._update(self._transport.send_json("POST", f"{self.href}/retry"))

    def clear_blocklist(self) -> Self:
        return self._update(self._transport.send_json("POST", f"{self.href}/blocklist/clear"))

    def update(
        self,
        *,
        priority: int | None = None,
        weight: int | None = None,
        title: str | None = None,
        max_retries: int | None = None,
        requirements: Requirements | Mapping[str, Any] | None = None,
        project: str | None = None,
        max_running: int | None = None,
        preemptible: bool | None = None,
    ) -> Self:
        """
        Change the fields given (C{PATCH}). C{requirements}: a
        L{Requirements} sets all of them; a mapping changes only the ones it
        names (C{{"cpus": 8}}). Priority and requirements apply to tasks not
        yet handed out. C{max_running=0} takes the job's cap away.
        """
        body: dict[str, Any] = {
            "priority": priority,
            "weight": weight,
            "title": title,
            "max_retries": max_retries,
            "project": project,
            "max_running": max_running,
            "preemptible": preemptible,
        }
        body = {key: value for key, value in body.items() if value is not None}
        if max_running == 0:
            body["max_running"] = None
        if requirements is not None:
            body["requirements"] = requirements_json(requirements)
        return self._update(self._transport.send_json("PATCH", self.href, body))

    def delete(self) -> None:
        """
        Delete the job; only a finished one can be (409 otherwise).
        """
        self._transport.request("DELETE", self.href)

    def wait(
        self,
        poll_s: float = 5.0,
        timeout_s: float | None = None,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> Self:
        """
        Re-read the job every C{poll_s} seconds until it is finished, and
        return it. Check C{state} afterwards: a failed job is returned too.

        @raise TimeoutError: if C{timeout_s} passes first.
        """
        deadline = None if timeout_s is None else clock() + timeout_s
        while not self.refresh().is_finished:
            if deadline is not None and clock() + poll_s > deadline:
                raise TimeoutError(f"job {self.id} is still {self.state} after {timeout_s}s")
            sleep(poll_s)
        return self

    def __repr__(self) -> str:
        return f"<Job {self.raw.get('id')} {self.raw.get('state')} {self.raw.get('title')!r}>"


class Task(Resource, _Ending):
    """
    A group of a job's frames that one agent renders in one go.
    """

    @property
    def id(self) -> int:
        return int(self.raw["id"])

    @property
    def job_id(self) -> int:
        return int(ref_id(self.raw.get("job")))

    @property
    def index(self) -> int:
        return int(self.raw["index"])

    @property
    def frames(self) -> list[int]:
        return list(self.raw.get("frames") or [])

    @property
    def layer(self) -> str:
        """
        The name of its layer (C{main} for a job of one command, and from a
        master from before layers).
        """
        return str(self.raw.get("layer") or "main")

    @property
    def command(self) -> list[str] | None:
        """
        The task's own command, when it replaces the job's.
        """
        command = self.raw.get("command")
        return list(command) if command is not None else None

    @property
    def state(self) -> str:
        """
        C{waiting}, C{queued}, C{assigned}, C{running}, C{done}, C{failed}
        or C{canceled}.
        """
        return str(self.raw["state"])

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_TASK_STATES

    @property
    def attempt(self) -> int:
        """
        The current or last attempt's number; 0 before the first.
        """
        return int(self.raw.get("attempt") or 0)

    @property
    def agent_id(self) -> str | None:
        agent = ref_id(self.raw.get("agent"))
        return str(agent) if agent is not None else None

    @property
    def agent_hostname(self) -> str | None:
        """
        The hostname of the agent it is (or was last) handed to, if known.
        """
        return _hostname(self.raw.get("agent"))

    @property
    def progress(self) -> float:
        return float(self.raw.get("progress") or 0.0)

    def job(self) -> Job:
        return Job(self._transport, self._transport.get_json(ref_href(self.raw.get("job"), "job")))

    def agent(self) -> Agent | None:
        """
        The agent it is (or was last) handed to, if any.
        """
        return _agent(self, self.raw.get("agent"))

    def attempts(self) -> list[Attempt]:
        """
        Every attempt so far, oldest first.
        """
        href = self.raw.get("attempts") or f"{self.href}/attempts"
        return [Attempt(self._transport, raw) for raw in list_items(self._transport, href)]

    def read_log(self, attempt: int | None = None, after: int = 0) -> LogChunk:
        """
        The log lines of an attempt (the current one by default) after line
        number C{after} (lines count from 1), with the attempt read and the
        C{after} for the next read.
        """
        response = self._transport.request(
            "GET", f"{self.href}/log", query={"attempt": attempt, "after": after or None}
        )
        text = response.text()
        chosen = _int_header(response.header("x-masterd-attempt"), attempt or 0)
        following = _int_header(
            response.header("x-masterd-next-after"), after + len(text.splitlines())
        )
        return LogChunk(text, chosen, following)

    def log(self, attempt: int | None = None, after: int = 0) -> str:
        """
        The log of an attempt (the current one by default) as text, from
        line C{after} + 1.
        """
        return self.read_log(attempt, after).text

    def follow_log(
        self,
        attempt: int | None = None,
        after: int = 0,
        poll_s: float = 2.0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> Iterator[LogChunk]:
        """
        The log as it grows, until the task is finished: each chunk as it
        comes, polling every C{poll_s} seconds. Without C{attempt}, a retry's
        new attempt is followed too (its chunks carry the new number).
        """
        follower = LogFollower(self, attempt, after)
        while True:
            yield from follower.poll()
            if follower.finished:
                return
            sleep(poll_s)

    def cancel(self) -> Self:
        return self._update(self._transport.send_json("POST", f"{self.href}/cancel"))

    def retry(self, done: bool = False) -> Self:
        """
        A failed or canceled task back to queued; its failures count from 0.
        With C{done}, a done task is rendered again too (a re-render: what
        its first done released stays released).
        """
        body = {"done": True} if done else None
        return self._update(self._transport.send_json("POST", f"{self.href}/retry", body))

    def __repr__(self) -> str:
        return (
            f"<Task {self.raw.get('id')} {self.raw.get('state')} frames {self.raw.get('frames')}>"
        )


class Attempt(_Ending):
    """
    One time a task was handed to an agent.
    """

    @property
    def task_id(self) -> int:
        return int(ref_id(self.raw.get("task")))

    @property
    def job_id(self) -> int:
        return int(ref_id(self.raw.get("job")))

    @property
    def attempt(self) -> int:
        """
        Its number, from 1.
        """
        return int(self.raw["attempt"])

    @property
    def agent_id(self) -> str | None:
        agent = ref_id(self.raw.get("agent"))
        return str(agent) if agent is not None else None

    @property
    def agent_hostname(self) -> str | None:
        return _hostname(self.raw.get("agent"))

    @property
    def state(self) -> str:
        """
        C{assigned}, C{running}, C{done}, C{failed}, C{canceled}, C{lost},
        C{rejected} or C{preempted} (stopped for a job of higher priority:
        not counted as a failure, and its task queued again).
        """
        return str(self.raw["state"])

    @property
    def gpu_devices(self) -> list[int]:
        """
        The indexes of the agent's GPUs it was given (its
        C{CUDA_VISIBLE_DEVICES}); empty for a task that needs none.
        """
        return [int(index) for index in self.raw.get("gpu_devices") or []]

    def task(self) -> Task:
        href = ref_href(self.raw.get("task"), "task")
        return Task(self._transport, self._transport.get_json(href))

    def job(self) -> Job:
        return Job(self._transport, self._transport.get_json(ref_href(self.raw.get("job"), "job")))

    def agent(self) -> Agent | None:
        return _agent(self, self.raw.get("agent"))

    def log(self, after: int = 0) -> str:
        return self.task().log(self.attempt, after)

    def refresh(self) -> Self:
        """
        Read the attempt again (from its task's attempts: it has no href).
        """
        for raw in list_items(
            self._transport, f"{ref_href(self.raw.get('task'), 'task')}/attempts"
        ):
            if raw.get("attempt") == self.attempt:
                self.raw = dict(raw)
        return self

    def __repr__(self) -> str:
        task = ref_id(self.raw.get("task"))
        return f"<Attempt {self.raw.get('attempt')} of task {task} {self.raw.get('state')}>"


def _agent(record: Record, ref: object) -> Agent | None:
    # Imported here: agents refer back to tasks and attempts.
    from ._agents import Agent

    if ref is None:
        return None
    return Agent(record._transport, record._transport.get_json(ref_href(ref, "agent")))


def _hostname(ref: object) -> str | None:
    hostname = ref.get("hostname") if isinstance(ref, Mapping) else None
    return str(hostname) if hostname is not None else None


def _int_header(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
