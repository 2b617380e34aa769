"""
The entry point: a L{Client} for one master, from which every model comes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Union
from urllib.parse import quote

from ._accounts import AuditEntry, Token, api_time
from ._base import Requirements, iterate_pages, list_items, requirements_json
from ._errors import MasterdError
from ._http import Opener, Transport
from ._layers import Dependency, LayerSpec, dependencies_json, layer_json
from ._openjd import Template, _body, check_openjd
from ._scheduling import Limit, Project, limit_href, project_href
from ._webhooks import Delivery, Webhook, webhook_changes
from .models import Agent, Job, Master, Task

#: A C{depends_on} entry: a job id, a L{Job}, a L{Dependency}, or its JSON
#: (C{{"job": 12, "mode": "frame"}}); in a layer, also a layer's name.
# (Union, not |: the client runs on Python 3.9.)
DependencyEntry = Union[int, str, Job, Dependency, Mapping[str, Any]]

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
    depends_on: Sequence[DependencyEntry] | None = None,
    paused: bool | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    max_retries: int | None = None,
    task_timeout_s: int | None = None,
    stall_timeout_s: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    tasks: Sequence[Mapping[str, Any]] | None = None,
    layers: Sequence[LayerSpec | Mapping[str, Any]] | None = None,
    project: str | None = None,
    limits: Sequence[str] | None = None,
    max_running: int | None = None,
    preemptible: bool | None = None,
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
    if layers is not None:
        body["layers"] = [layer_json(layer) for layer in layers]
    if requirements is not None:
        body["requirements"] = requirements_json(requirements)
    if depends_on:
        body["depends_on"] = dependencies_json(depends_on)
    if env is not None:
        body["env"] = dict(env)
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if limits is not None:
        body["limits"] = list(limits)
    plain = {
        "chunk": chunk,
        "priority": priority,
        "weight": weight,
        "paused": paused,
        "cwd": cwd,
        "max_retries": max_retries,
        "task_timeout_s": task_timeout_s,
        "stall_timeout_s": stall_timeout_s,
        "project": project,
        "max_running": max_running,
        "preemptible": preemptible,
    }
    body.update({key: value for key, value in plain.items() if value is not None})
    return body


class Client:
    """
    A client of one master.

    @param url: the master's base URL, C{http://master:8080}.
    @param token: a bearer token (of the master's C{auth.tokens}, or made
        with L{create_token}); role viewer reads, user submits and steers
        its own jobs, operator changes any, admin also manages tokens and
        webhooks.
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
        depends_on: Sequence[DependencyEntry] | None = None,
        paused: bool | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        max_retries: int | None = None,
        task_timeout_s: int | None = None,
        stall_timeout_s: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        tasks: Sequence[Mapping[str, Any]] | None = None,
        layers: Sequence[LayerSpec | Mapping[str, Any]] | None = None,
        project: str | None = None,
        limits: Sequence[str] | None = None,
        max_running: int | None = None,
        preemptible: bool | None = None,
    ) -> Job:
        """
        Submit a job and return it as created. Fields left out get the
        master's defaults (see docs/jobs.md); C{depends_on} takes job ids,
        L{Job}s, L{Dependency}s or dicts (C{{"job": 12, "mode": "frame"}});
        C{layers} takes L{LayerSpec}s or dicts, in place of one command.
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
            stall_timeout_s=stall_timeout_s,
            metadata=metadata,
            tasks=tasks,
            layers=layers,
            project=project,
            limits=limits,
            max_running=max_running,
            preemptible=preemptible,
        )
        return self.submit_body(body)

    def submit_openjd(
        self,
        template: Template,
        parameters: Mapping[str, Any] | None = None,
        *,
        priority: int | None = None,
        weight: int | None = None,
        project: str | None = None,
        paused: bool | None = None,
        max_retries: int | None = None,
        limits: Sequence[str] | None = None,
        max_running: int | None = None,
        preemptible: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        validate: bool = True,
        **job_fields: Any,
    ) -> Job:
        """
        Submit an Open Job Description job template with its parameters'
        values (C{{"Frames": "1-100", "Scene": "/shots/010.blend"}}): its
        steps become the job's layers, its formatted name the job's title.
        C{template} is the template (a mapping), its YAML or JSON text, or
        the path of a C{.yaml}, C{.yml} or C{.json} file (a C{Path}, or a
        one-line string ending so). The job fields given go beside it;
        C{job_fields} are sent as they are (fields this client does not
        know).

        With C{openjd-model} installed (and C{validate}), the template and
        values are checked first, as the master checks them, and nothing is
        sent if they are wrong; without it the master alone checks.

        @raise MasterdError: the template or a value is wrong (400,
            C{invalid_field}, C{details["field"]} the part at fault, e.g.
            C{openjd.parameters.Frames}; C{details["local"]} when it was
            found here), or the master refused the job.
        @raise OSError: the template's file cannot be read.
        """
        fields = {
            "priority": priority,
            "weight": weight,
            "project": project,
            "paused": paused,
            "max_retries": max_retries,
            "limits": limits,
            "max_running": max_running,
            "preemptible": preemptible,
            "metadata": metadata,
            **job_fields,
        }
        body, directory = _body(template, parameters, fields)
        if validate:
            check_openjd(body, directory)
        return self.submit_body(body)

    def submit_body(self, body: Mapping[str, Any]) -> Job:
        """
        Submit a job from the JSON body of C{POST /api/v1/jobs} as it is (a
        job file's content, or a L{submission}), fields this client does
        not know included.
        """
        document = self._transport.send_json("POST", "/api/v1/jobs", dict(body))
        return Job(self._transport, document)

    def jobs(
        self,
        state: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        project: str | None = None,
        search: str | None = None,
        sort: str | None = None,
    ) -> Iterator[Job]:
        """
        Every job, newest first, or those in C{state} / of C{owner} / of
        C{project} / whose title holds C{search} (in any case; digits only:
        also the job with that id). C{sort} is another order: C{id},
        C{priority}, C{title}, C{state}, C{owner} or C{updated}, with a
        C{-} first for descending (ties go newest first). C{limit} is the
        page size (1-500): the iteration goes on over every page, fetching
        each when it is reached.
        """
        query = {"q": search, "state": state, "owner": owner, "project": project,
                 "sort": sort, "limit": limit}  # fmt: skip
        return iterate_pages(
            self._transport, "/api/v1/jobs", query, lambda raw: Job(self._transport, raw)
        )

    def job(self, job_id: int) -> Job:
        return Job(self._transport, self._transport.get_json(f"/api/v1/jobs/{int(job_id)}"))

    def archive(self, job_id: int, logs: bool = False) -> dict[str, Any]:
        """
        A finished job as one document (its job, tasks and attempts, and with
        C{logs} every attempt's log): what C{masterctl archive} saves.
        """
        query = {"logs": "true"} if logs else None
        found: dict[str, Any] = self._transport.get_json(
            f"/api/v1/jobs/{int(job_id)}/archive", query
        )
        return found

    def write_archive(self, job_id: int) -> dict[str, Any]:
        """
        Have the master write a finished job's archive to its
        retention.archive_dir: C{{"path", "bytes", "job"}}.
        """
        found: dict[str, Any] = self._transport.send_json(
            "POST", f"/api/v1/jobs/{int(job_id)}/archive"
        )
        return found

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
        return Agent(self._transport, self._transport.get_json(_agent_href(agent_id)))

    def reset_agent_credential(self, agent_id: str) -> Agent:
        """
        Forget an agent's per-agent secret (role admin), so that a
        reinstalled host enrolls again under its id; returns the agent.
        """
        href = _agent_href(agent_id) + "/credential/reset"
        return Agent(self._transport, self._transport.send_json("POST", href))

    # -- limits and projects ---------------------------------------------

    def limits(self) -> list[Limit]:
        """
        Every limit by name, with its current use.
        """
        items = list_items(self._transport, "/api/v1/limits")
        return [Limit(self._transport, raw) for raw in items]

    def limit(self, name: str) -> Limit:
        return Limit(self._transport, self._transport.get_json(limit_href(name)))

    def set_limit(self, name: str, max: int, description: str | None = None) -> Limit:
        """
        Create a limit or change its max (role operator): at most C{max}
        tasks naming it assigned or running at once, over every master. A
        max below the use lets the running tasks finish and assigns none
        until the use is below it. C{description} C{None} keeps the current
        one (read first: one more request).
        """
        if description is None:
            description = self._current_description(name)
        body = {"max": max, "description": description}
        return Limit(self._transport, self._transport.send_json("PUT", limit_href(name), body))

    def delete_limit(self, name: str) -> None:
        """
        Delete a limit (role operator); 409 while an unfinished job names it.
        """
        self._transport.request("DELETE", limit_href(name))

    def _current_description(self, name: str) -> str:
        try:
            return self.limit(name).description
        except MasterdError as error:
            if error.status == 404:
                return ""
            raise

    def projects(self) -> list[Project]:
        """
        Every project with a weight, and every project of an unfinished job
        (weight 1 unless set), by name.
        """
        items = list_items(self._transport, "/api/v1/projects")
        return [Project(self._transport, raw) for raw in items]

    def project(self, name: str) -> Project:
        return Project(self._transport, self._transport.get_json(project_href(name)))

    def set_project(self, name: str, weight: int) -> Project:
        """
        Set a project's weight (1-1000; role operator): within a priority,
        projects share the farm in proportion to their weights.
        """
        document = self._transport.send_json("PUT", project_href(name), {"weight": weight})
        return Project(self._transport, document)

    def delete_project(self, name: str) -> None:
        """
        Forget a project's weight (back to 1; role operator); its jobs stay.
        """
        self._transport.request("DELETE", project_href(name))

    # -- accounts ---------------------------------------------------------

    def create_token(
        self,
        user: str,
        role: str,
        description: str = "",
        expires_at: datetime | str | None = None,
    ) -> Token:
        """
        Create a token for C{user} with C{role} (viewer, user, operator,
        admin, agent; role admin). Its C{secret} is in the returned L{Token}
        and nowhere else, ever: hand it on now. C{expires_at} is an aware
        datetime or an ISO 8601 string with its zone; C{None}: never.

        @raise ValueError: for a naive C{expires_at}.
        """
        body = {
            "user": user,
            "role": role,
            "description": description,
            "expires_at": None if expires_at is None else api_time(expires_at, "expires_at"),
        }
        return Token(self._transport, self._transport.send_json("POST", "/api/v1/tokens", body))

    def tokens(
        self, user: str | None = None, revoked: bool = False, limit: int = 100
    ) -> Iterator[Token]:
        """
        The database's tokens by id (never their secrets), of C{user} if
        given; revoked ones too with C{revoked=True}. C{limit} is the page
        size (1-500).
        """
        query = {"user": user, "revoked": True if revoked else None, "limit": limit}
        return iterate_pages(
            self._transport, "/api/v1/tokens", query, lambda raw: Token(self._transport, raw)
        )

    def token(self, token_id: int) -> Token:
        return Token(self._transport, self._transport.get_json(f"/api/v1/tokens/{int(token_id)}"))

    def revoke_token(self, token_id: int) -> None:
        """
        Revoke a token: every master refuses it within a couple of seconds.
        It stays listed (with C{revoked=True}); revoking it again is a 409.
        """
        self._transport.request("DELETE", f"/api/v1/tokens/{int(token_id)}")

    def audit(
        self,
        actor: str | None = None,
        resource: str | None = None,
        action: str | None = None,
        since: datetime | str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> Iterator[AuditEntry]:
        """
        The audit trail, oldest first (role operator or admin): rows of
        C{actor} (a user name), about C{resource} (an href, and what lies
        under it), of C{action} (exact, C{job.cancel}, or a kind,
        C{job.*}), at or after C{since} (an aware datetime or ISO 8601), with
        an id above C{after} (to go on from the last row read). C{limit} is
        the page size (1-500).

        @raise ValueError: for a naive C{since}.
        """
        query = {
            "actor": actor,
            "resource": resource,
            "action": action,
            "since": None if since is None else api_time(since, "since"),
            "after": after,
            "limit": limit,
        }
        return iterate_pages(
            self._transport, "/api/v1/audit", query, lambda raw: AuditEntry(self._transport, raw)
        )

    # -- webhooks ---------------------------------------------------------

    def create_webhook(
        self,
        url: str,
        events: Sequence[str],
        secret: str,
        description: str = "",
        enabled: bool = True,
    ) -> Webhook:
        """
        Have the master POST the C{events} named (C{job.done},
        C{job.failed}, ...; see L{masterd_client.EVENTS}) to C{url}, signed
        with C{secret} (role admin). The secret is never shown again.
        """
        body = {"url": url, "events": list(events), "secret": secret,
                "description": description, "enabled": enabled}  # fmt: skip
        document = self._transport.send_json("POST", "/api/v1/webhooks", body)
        return Webhook(self._transport, document)

    def webhooks(self, limit: int | None = None) -> Iterator[Webhook]:
        """
        Every webhook, over every page; C{limit} is the page size.
        """
        return iterate_pages(self._transport, "/api/v1/webhooks", {"limit": limit},
                             lambda raw: Webhook(self._transport, raw))  # fmt: skip

    def webhook(self, webhook_id: int) -> Webhook:
        return Webhook(self._transport, self._transport.get_json(_webhook_href(webhook_id)))

    def update_webhook(
        self,
        webhook_id: int,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        secret: str | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Webhook:
        """
        Change the fields given of a webhook (C{events} replaces its list);
        returns it as changed.
        """
        body = webhook_changes(url=url, events=events, secret=secret, description=description,
                               enabled=enabled)  # fmt: skip
        document = self._transport.send_json("PATCH", _webhook_href(webhook_id), body)
        return Webhook(self._transport, document)

    def delete_webhook(self, webhook_id: int) -> None:
        self._transport.request("DELETE", _webhook_href(webhook_id))

    def webhook_deliveries(
        self, webhook_id: int, state: str | None = None, limit: int | None = None
    ) -> Iterator[Delivery]:
        """
        A webhook's deliveries (with their tries, statuses and errors),
        over every page; C{limit} is the page size.
        """
        href = _webhook_href(webhook_id) + "/deliveries"
        return iterate_pages(self._transport, href, {"state": state, "limit": limit},
                             lambda raw: Delivery(self._transport, raw))  # fmt: skip


def _agent_href(agent_id: str) -> str:
    # Quoted: an id typed by a person must not turn into another path.
    return f"/api/v1/agents/{quote(str(agent_id), safe='')}"


def _webhook_href(webhook_id: int) -> str:
    return f"/api/v1/webhooks/{int(webhook_id)}"
