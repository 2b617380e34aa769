"""
The entry point: a L{Client} for one master, from which every model comes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from ._base import Requirements, ids_of, iterate_pages, requirements_json
from ._http import Opener, Transport
from .models import Agent, Job, Master, Task

DEFAULT_URL = "http://127.0.0.1:8080"


def submission(
    *,
    title: str,
    command: Sequence[str] | None = None,
    frames: str | Sequence[int] | None = None,
    chunk: int | None = None,
    priority: int | None = None,
    weight: int | None = None,
    requirements: Requirements | Mapping[str, Any] | None = None,
    depends_on: Sequence[int | Job] | None = None,
    paused: bool | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    max_retries: int | None = None,
    task_timeout_s: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    tasks: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """
    The body of C{POST /api/v1/jobs}: only the fields given, so that the
    master's defaults apply to the others.
    """
    body: dict[str, Any] = {"title": title}
    if command is not None:
        body["command"] = list(command)
    if frames is not None:
        body["frames"] = frames if isinstance(frames, str) else list(frames)
    if tasks is not None:
        body["tasks"] = [dict(task) for task in tasks]
    if requirements is not None:
        body["requirements"] = requirements_json(requirements)
    if depends_on:
        body["depends_on"] = ids_of(depends_on)
    if env is not None:
        body["env"] = dict(env)
    if metadata is not None:
        body["metadata"] = dict(metadata)
    plain = {
        "chunk": chunk,
        "priority": priority,
        "weight": weight,
        "paused": paused,
        "cwd": cwd,
        "max_retries": max_retries,
        "task_timeout_s": task_timeout_s,
    }
    body.update({key: value for key, value in plain.items() if value is not None})
    return body


class Client:
    """
    A client of one master.

    @param url: the master's base URL, C{http://master:8080}.
    @param token: a bearer token from the master's C{auth.tokens}; role
        viewer reads, operator changes.
    @param timeout: seconds to wait for each answer.
    @param opener: what sends requests (C{urllib.request.build_opener()} by
        default); give your own for proxies, TLS settings or tests.
    @raise ValueError: if C{url} is not an http or https URL.
    """

    def __init__(
        self, url: str, token: str | None, timeout: float = 30, opener: Opener | None = None
    ) -> None:
        self._transport = Transport(url, token, timeout, opener)

    @classmethod
    def from_env(
        cls,
        timeout: float = 30,
        opener: Opener | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Client:
        """
        A client for C{$MASTERD_URL} (default C{http://127.0.0.1:8080}) with
        the token C{$MASTERD_TOKEN}.
        """
        env = os.environ if environ is None else environ
        return cls(env.get("MASTERD_URL") or DEFAULT_URL, env.get("MASTERD_TOKEN"), timeout, opener)

    @property
    def url(self) -> str:
        return self._transport.url

    def __repr__(self) -> str:
        return f"<Client {self.url}>"

    def master(self) -> Master:
        """
        The master answering, with its counters.
        """
        return Master(self._transport, self._transport.get_json("/api/v1/master"))

    def submit(
        self,
        *,
        title: str,
        command: Sequence[str] | None = None,
        frames: str | Sequence[int] | None = None,
        chunk: int | None = None,
        priority: int | None = None,
        weight: int | None = None,
        requirements: Requirements | Mapping[str, Any] | None = None,
        depends_on: Sequence[int | Job] | None = None,
        paused: bool | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        max_retries: int | None = None,
        task_timeout_s: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        tasks: Sequence[Mapping[str, Any]] | None = None,
    ) -> Job:
        """
        Submit a job and return it as created. Fields left out get the
        master's defaults (see docs/jobs.md); C{depends_on} takes job ids or
        L{Job}s.
        """
        body = submission(
            title=title,
            command=command,
            frames=frames,
            chunk=chunk,
            priority=priority,
            weight=weight,
            requirements=requirements,
            depends_on=depends_on,
            paused=paused,
            env=env,
            cwd=cwd,
            max_retries=max_retries,
            task_timeout_s=task_timeout_s,
            metadata=metadata,
            tasks=tasks,
        )
        return Job(self._transport, self._transport.send_json("POST", "/api/v1/jobs", body))

    def jobs(
        self, state: str | None = None, owner: str | None = None, limit: int = 50
    ) -> Iterator[Job]:
        """
        Every job, newest first, or those in C{state} / of C{owner}. C{limit}
        is the page size (1-500): the iteration goes on over every page,
        fetching each when it is reached.
        """
        query = {"state": state, "owner": owner, "limit": limit}
        return iterate_pages(
            self._transport, "/api/v1/jobs", query, lambda raw: Job(self._transport, raw)
        )

    def job(self, job_id: int) -> Job:
        return Job(self._transport, self._transport.get_json(f"/api/v1/jobs/{int(job_id)}"))

    def task(self, task_id: int) -> Task:
        return Task(self._transport, self._transport.get_json(f"/api/v1/tasks/{int(task_id)}"))

    def agents(
        self, state: str | None = None, tag: str | None = None, limit: int = 50
    ) -> Iterator[Agent]:
        """
        Every agent by id, or those in C{state} (idle, busy, offline,
        disabled) / with C{tag}; C{limit} is the page size, as for L{jobs}.
        """
        query = {"state": state, "tag": tag, "limit": limit}
        return iterate_pages(
            self._transport, "/api/v1/agents", query, lambda raw: Agent(self._transport, raw)
        )

    def agent(self, agent_id: str) -> Agent:
        # Quoted: an id typed by a person must not turn into another path.
        href = f"/api/v1/agents/{quote(str(agent_id), safe='')}"
        return Agent(self._transport, self._transport.get_json(href))
