"""
masterctl: argument handling, output and exit statuses against a fake
opener; and one run of the client and masterctl against a real master.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from masterd.client._output import bytes_text, command_text, usage_text
from masterd.client._watch import HEARTBEAT_S, progress_line
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from masterd.client import Client, Job, MasterdError
from masterd.client.cli import Runtime, run, split_command
from masterd.client.cli import main as cliMain
from masterd.client.cli import parse as cliParse

from ._api import TOKENS, startAPI
from .test_client import (
    AGENT,
    ROOT,
    FakeOpener,
    Reply,
    agentDoc,
    attemptDoc,
    counts,
    error,
    jobDoc,
    masterDoc,
    page,
    taskDoc,
)

URL = "http://master.test:8080"
NOW = datetime(2026, 11, 28, 23, 42, 7, tzinfo=UTC)


class FakeTerminal:
    """
    Runs masterctl with a fake opener, captured output, a fake clock whose
    sleep only moves it on, and a fixed "now".
    """

    def __init__(self, opener: FakeOpener, environ: dict[str, str] | None = None) -> None:
        self.opener = opener
        self.environ = {"MASTERD_URL": URL, "MASTERD_TOKEN": "tok"} if environ is None else environ
        self.slept: list[float] = []
        self.time = 1000.0
        self.columns = 200

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.time += seconds

    def run(self, *argv: str, tty: bool = False) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        runtime = Runtime(
            out=out,
            err=err,
            environ=self.environ,
            opener=self.opener,
            sleep=self.sleep,
            clock=lambda: self.time,
            now=lambda: NOW,
            tty=tty,
            columns=lambda: self.columns,
        )
        status = run(list(argv), runtime)
        return status, out.getvalue(), err.getvalue()


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = FakeOpener()
        self.terminal = FakeTerminal(self.opener)

    def run_(self, *argv: str, tty: bool = False) -> tuple[int, str, str]:
        return self.terminal.run(*argv, tty=tty)

    def timeline(self, *steps: tuple[float, Any]) -> Callable[[], Any]:
        """
        A reply that changes with the fake clock: each step's reply from its
        time on (seconds from now).
        """
        start = self.terminal.time

        def reply() -> Any:
            return [r for at, r in steps if self.terminal.time - start >= at][-1]

        return reply

    def assertFails(self, argv: list[str], status: int, message: str | None = None) -> str:
        """
        masterctl exits with C{status} and no traceback; for status 1 its
        stderr is the one line C{masterctl: <message>}.
        """
        code, out, err = self.run_(*argv)
        self.assertEqual(code, status, (out, err))
        self.assertNotIn("Traceback", err)
        if message is not None:
            self.assertEqual(err, f"masterctl: {message}\n")
        return err


class ArgumentTests(Base):
    def test_noCommand(self) -> None:
        err = self.assertFails([], 2)
        self.assertIn("usage: masterctl", err)
        self.assertEqual(self.opener.sent, [])

    def test_help(self) -> None:
        code, out, _ = self.run_("--help")
        self.assertEqual(code, 0)
        for name in [
            "submit",
            "jobs",
            "job",
            "tasks",
            "log",
            "cancel",
            "pause",
            "resume",
            "retry",
            "agents",
            "agent",
            "stats",
            "token",
            "audit",
            "webhook",
        ]:
            self.assertIn(name, out)

    def test_badValues(self) -> None:
        for argv in [
            ["job", "abc"],
            ["job", "0"],
            ["jobs", "--state", "sleeping"],
            ["jobs", "--limit", "-1"],
            ["log", "1", "--attempt", "0"],
            ["agent", AGENT, "--enable", "--disable"],
            ["submit", "--title", "t", "--frames", "1", "--env", "NOEQUALS", "--", "r"],
            ["submit", "--title", "t", "--frames", "1", "--chunk", "0", "--", "r"],
            ["submit", "--title", "t", "--", "r"],
            ["job", "1", "--watch", "--interval", "0"],
        ]:
            err = self.assertFails(argv, 2)
            self.assertIn("masterctl", err, argv)
        self.assertEqual(self.opener.sent, [])

    def test_submitNeedsCommand(self) -> None:
        err = self.assertFails(["submit", "--title", "t", "--frames", "1-4"], 2)
        self.assertIn("give the command after --", err)
        self.assertFails(["submit", "--title", "t", "--frames", "1-4", "--"], 2)

    def test_commandWithoutDashDash(self) -> None:
        """
        A job's command given without its --: one line that says where it
        goes, status 2, and no request.
        """
        code, out, err = self.run_("submit", "--title", "t", "--frames", "1-3", "render", "{frame}")
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(
            err, "masterctl: put the command after --: masterctl submit ... -- render '{frame}'\n"
        )
        err = self.assertFails(["submit", "--frames", "1", "render", "-f", "{frame}", "s 1"], 2)
        self.assertEqual(
            err,
            "masterctl: put the command after --: masterctl submit ... -- render -f '{frame}'"
            " 's 1'\n",
        )
        # Unknown options, and words for other commands, stay argparse's.
        err = self.assertFails(["submit", "--frames", "1", "--bogus", "--", "r"], 2)
        self.assertIn("masterctl: error: unrecognized arguments: --bogus", err)
        err = self.assertFails(["jobs", "extra"], 2)
        self.assertIn("masterctl: error: unrecognized arguments: extra", err)
        self.assertEqual(self.opener.sent, [])

    def test_dashDashOnlyForSubmit(self) -> None:
        err = self.assertFails(["jobs", "--", "x"], 2)
        self.assertIn("submit only", err)

    def test_badURL(self) -> None:
        err = self.assertFails(["--url", "farm:8080", "jobs"], 2)
        self.assertIn("--url", err)

    def test_splitCommand(self) -> None:
        self.assertEqual(
            split_command(["submit", "--title", "t", "--", "render", "--", "-x"]),
            (["submit", "--title", "t"], ["render", "--", "-x"]),
        )
        self.assertEqual(split_command(["jobs"]), (["jobs"], None))

    def test_globalOptionsAnywhere(self) -> None:
        before = cliParse(["--json", "--url", "http://a:1", "--token", "x", "jobs"], {})
        after = cliParse(["jobs", "--json", "--url", "http://a:1", "--token", "x"], {})
        for args in (before, after):
            self.assertEqual((args.json, args.url, args.token), (True, "http://a:1", "x"))

    def test_environment(self) -> None:
        args = cliParse(["jobs"], {"MASTERD_URL": "http://e:2", "MASTERD_TOKEN": "t"})
        self.assertEqual((args.url, args.token, args.json), ("http://e:2", "t", False))
        args = cliParse(["--url", "http://o:3", "jobs"], {"MASTERD_URL": "http://e:2"})
        self.assertEqual((args.url, args.token), ("http://o:3", None))
        self.assertEqual(cliParse(["jobs"], {}).url, "http://127.0.0.1:8080")

    def test_tokenAndURLUsed(self) -> None:
        self.opener.on("GET", "/api/v1/jobs", page([]))
        self.run_("--url", "http://other:9", "--token", "abc", "jobs")
        self.assertEqual(self.opener.sent[0].url, "http://other:9/api/v1/jobs?limit=50")
        self.assertEqual(self.opener.sent[0].headers["authorization"], "Bearer abc")

    def test_requestTimeout(self) -> None:
        self.opener.on("GET", "/api/v1/master", masterDoc())
        self.run_("stats", "--request-timeout", "2.5")
        self.assertEqual(self.opener.sent[0].timeout, 2.5)


class SubmitTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.opener.on("POST", "/api/v1/jobs", Reply(jobDoc(state="queued"), 201))

    def test_body(self) -> None:
        code, out, err = self.run_(
            "submit",
            "--title",
            "shot 10",
            "--frames",
            "1-100x5,200",
            "--chunk",
            "2",
            "--priority",
            "70",
            "--weight",
            "2",
            "--cpus",
            "8",
            "--ram-mb",
            "16000",
            "--gpus",
            "1",
            "--tag",
            "linux",
            "--tag",
            "maya",
            "--depends-on",
            "41",
            "--depends-on",
            "40",
            "--max-retries",
            "1",
            "--timeout",
            "3600",
            "--paused",
            "--env",
            "A=b",
            "--env",
            "OPTS=-x=1",
            "--env",
            "EMPTY=",
            "--cwd",
            "/shots/10",
            "--",
            "render",
            "-s",
            "{start}",
            "--title",
            "x",
            "--",
        )
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, "submitted job 42: 'shot 10 beauty' (40 tasks, queued)\n")
        self.assertEqual(
            self.opener.sent[0].body,
            {
                "title": "shot 10",
                "command": ["render", "-s", "{start}", "--title", "x", "--"],
                "frames": "1-100x5,200",
                "chunk": 2,
                "priority": 70,
                "weight": 2,
                "requirements": {"cpus": 8, "ram_mb": 16000, "gpus": 1, "tags": ["linux", "maya"]},
                "depends_on": [41, 40],
                "paused": True,
                "env": {"A": "b", "OPTS": "-x=1", "EMPTY": ""},
                "cwd": "/shots/10",
                "max_retries": 1,
                "task_timeout_s": 3600,
            },
        )

    def test_minimal(self) -> None:
        self.run_("submit", "--title", "t", "--frames", "1-4", "--", "render", "{frame}")
        self.assertEqual(
            self.opener.sent[0].body,
            {"title": "t", "command": ["render", "{frame}"], "frames": "1-4"},
        )

    def test_titleDefaultsToCommand(self) -> None:
        self.run_("submit", "--frames", "1-4", "--", "sh", "-c", "echo {frame}")
        self.assertEqual(self.opener.sent[0].body["title"], "sh -c echo {frame}")
        self.run_("submit", "--frames", "1", "--", "render", "x" * 300)
        title = self.opener.sent[-1].body["title"]
        self.assertEqual((len(title), title[:7], title[-1]), (200, "render ", "…"))

    def test_titleQuoted(self) -> None:
        """
        In the line of other fields, a title reads as one: shell-quoted when
        it holds a space or a quote, on one line whatever it holds.
        """
        for title, shown in [
            ("shot9", "shot9"),
            ('shot "10" beauty', """'shot "10" beauty'"""),
            ("it's", """'it'"'"'s'"""),
            ("a\nb", "$'a\\nb'"),
        ]:
            self.opener.on("POST", "/api/v1/jobs", Reply(jobDoc(title=title, state="queued"), 201))
            _, out, _ = self.run_("submit", "--title", title, "--frames", "1", "--", "r")
            self.assertEqual(out, f"submitted job 42: {shown} (40 tasks, queued)\n")

    def test_someRequirements(self) -> None:
        self.run_("submit", "--title", "t", "--frames", "1", "--gpus", "2", "--", "r")
        self.assertEqual(self.opener.sent[0].body["requirements"], {"gpus": 2})

    def test_quiet(self) -> None:
        code, out, _ = self.run_("submit", "-q", "--title", "t", "--frames", "1", "--", "r")
        self.assertEqual((code, out), (0, "42\n"))

    def test_json(self) -> None:
        code, out, _ = self.run_("submit", "--json", "--title", "t", "--frames", "1", "--", "r")
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out), jobDoc(state="queued"))

    def test_refused(self) -> None:
        self.opener.on(
            "POST",
            "/api/v1/jobs",
            error(422, "invalid_field", 'frames: "5-1" runs backwards', field="frames"),
        )
        self.assertFails(
            ["submit", "--title", "t", "--frames", "5-1", "--", "r"],
            1,
            'frames: "5-1" runs backwards',
        )

    def test_watch(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc(state="done", tasks=counts(done=4)))
        code, out, err = self.run_("submit", "--watch", "--title", "t", "--frames", "1", "--", "r")
        self.assertEqual(code, 0)
        self.assertEqual(err, "masterctl: submitted job 42\n")
        self.assertIn("job 42 queued", out.splitlines()[0])
        self.assertIn("job 42 done", out.splitlines()[-1])


class ListTests(Base):
    def jobs(self) -> list[dict[str, Any]]:
        return [
            jobDoc(),
            jobDoc(
                41, state="done", priority=50, owner="alice", title="shot 9", tasks=counts(done=40)
            ),
        ]

    def test_jobsTable(self) -> None:
        self.opener.on("GET", "/api/v1/jobs", page(self.jobs()))
        code, out, err = self.run_("jobs")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out,
            "ID  STATE    PRI  DONE/TOTAL  OWNER  TITLE\n"
            "42  running   70       10/40  ops    shot 10 beauty\n"
            "41  done      50       40/40  alice  shot 9\n",
        )
        self.assertEqual(self.opener.sent[0].query, {"limit": "50"})

    def test_jobsFilters(self) -> None:
        self.opener.on("GET", "/api/v1/jobs", page([]))
        code, out, err = self.run_("jobs", "--state", "failed", "--owner", "alice")
        self.assertEqual((code, out, err), (0, "", "masterctl: no jobs\n"))
        self.assertEqual(
            self.opener.sent[0].query, {"state": "failed", "owner": "alice", "limit": "50"}
        )

    def test_jobsLimit(self) -> None:
        """
        --limit is how many to show: pages of that size, and no more pages
        than needed.
        """
        self.opener.on("GET", "/api/v1/jobs", page(self.jobs(), "/api/v1/jobs?limit=2&after=41"))
        code, out, _ = self.run_("jobs", "--limit", "2")
        self.assertEqual(code, 0)
        self.assertEqual(len(out.splitlines()), 3)
        self.assertEqual(len(self.opener.sent), 1)
        self.assertEqual(self.opener.sent[0].query, {"limit": "2"})

    def test_jobsAll(self) -> None:
        self.opener.on("GET", "/api/v1/jobs", page(self.jobs()[:1], "/api/v1/jobs?after=42"))
        self.opener.on("GET", "/api/v1/jobs?after=42", page(self.jobs()[1:]))
        _, out, _ = self.run_("jobs", "--limit", "0")
        self.assertEqual(len(out.splitlines()), 3)
        self.assertEqual(self.opener.sent[0].query, {"limit": "500"})

    def test_jobsJSON(self) -> None:
        self.opener.on("GET", "/api/v1/jobs", page(self.jobs(), "/api/v1/jobs?after=41"))
        code, out, _ = self.run_("jobs", "--json", "--limit", "2")
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out), {"items": self.jobs()})

    def test_tasksTable(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc())
        self.opener.on(
            "GET",
            "/api/v1/jobs/42/tasks",
            page(
                [
                    taskDoc(
                        9000,
                        index=0,
                        frames=[1, 2, 3, 5],
                        state="done",
                        attempt=1,
                        agent=None,
                        progress=1.0,
                        exit_code=0,
                    ),
                    taskDoc(
                        9001,
                        error="exit status 1:   Segmentation\nfault " + "x" * 80,
                        exit_code=1,
                        state="failed",
                        frames=[7],
                    ),
                ]
            ),
        )
        code, out, _ = self.run_("tasks", "42", "--state", "failed")
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines(),
            [
                "  ID  INDEX  STATE   FRAMES  ATTEMPT  PROGRESS  AGENT"
                "                                 HOSTNAME  EXIT  ERROR",
                "9000      0  done    1-3,5         1      100%  -"
                "                                     -            0  -",
                "9001      3  failed  7             2       40%  "
                "6f1c0b9e-52a5-4d36-9a8f-0d1c2b3a4e5f  node-017     1  "
                "exit status 1: Segmentation fault xxxxxxxxxxxxxxxxxxxxxxxxx…",
            ],
        )
        self.assertEqual(self.opener.sent[1].query, {"state": "failed", "limit": "500"})

    def test_agentsTable(self) -> None:
        self.opener.on(
            "GET",
            "/api/v1/agents",
            page(
                [
                    agentDoc(),
                    agentDoc(
                        "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b",
                        hostname="n2",
                        state="offline",
                        tags=[],
                        last_seen=None,
                        ram_mb=512,
                    ),
                ]
            ),
        )
        code, out, _ = self.run_("agents", "--state", "busy", "--tag", "gpu")
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines(),
            [
                "ID                                    HOSTNAME  STATE    CPUS  RAM MB  GPUS  SLOTS"
                "  TAGS              LAST SEEN",
                f"{AGENT}  node-017  busy       16   64000     1      2  farm-b,gpu,linux  59s ago",
                "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b  n2        offline    16     512     1      2"
                "  -                 -",
            ],
        )
        self.assertEqual(self.opener.sent[0].query, {"state": "busy", "tag": "gpu", "limit": "500"})


class ShowTests(Base):
    def test_job(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc())
        code, out, _ = self.run_("job", "42")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertEqual(lines[0], "job 42: 'shot 10 beauty'")
        self.assertIn("state         running", lines)
        self.assertIn("priority      70 (weight 1)", lines)
        self.assertIn("progress      25%, 10/40 tasks done", lines)
        self.assertIn("command       render -s '{start}' -e '{end}' scene.ma", lines)
        self.assertIn("requirements  8 cpus, 16000 MB ram, 0 gpus, tags linux,maya", lines)
        self.assertIn("parents       41", lines)
        self.assertIn("children      -", lines)
        self.assertIn(f"blocklist     {AGENT} (node-017), 3 failures", lines)
        self.assertIn("finished      -", lines)

    def test_jobCommandAndEnvQuoted(self) -> None:
        """
        A command reads as one would type it (shlex.join), env pairs as
        --env takes them.
        """
        command = ["sh", "-c", "echo rendering {start}-{end}; sleep 0.1"]
        env = {"A": "b  c", "EMPTY": "", "OCIO": "/x.ocio"}
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc(title="sh -c", command=command, env=env))
        _, out, _ = self.run_("job", "42")
        lines = out.splitlines()
        self.assertEqual(lines[0], "job 42: 'sh -c'")
        self.assertIn("command       sh -c 'echo rendering {start}-{end}; sleep 0.1'", lines)
        self.assertIn("env           'A=b  c' EMPTY= OCIO=/x.ocio", lines)

    def test_commandText(self) -> None:
        """
        What masterctl prints of a command is what a shell reads back as
        the same argv; on one line, whatever the arguments hold.
        """
        for argv in [
            ["sh", "-c", "echo rendering {start}-{end}; sleep 0.1"],
            ["render", "it's", 'say "hi"', "a  b", "", "$HOME", "*.exr", "-f", "{frame:04d}"],
        ]:
            self.assertEqual(shlex.split(command_text(argv)), argv)
        self.assertEqual(
            command_text(["sh", "-c", "echo rendering {start}-{end}; sleep 0.1"]),
            "sh -c 'echo rendering {start}-{end}; sleep 0.1'",
        )
        self.assertEqual(
            command_text(["printf", "a\nb\t'\\\x01"]), "printf $'a\\nb\\t\\'\\\\\\x01'"
        )

    def test_jobJSON(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc())
        code, out, _ = self.run_("--json", "job", "42")
        self.assertEqual((code, json.loads(out)), (0, jobDoc()))

    def test_task(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc())
        self.opener.on("GET", "/api/v1/tasks/9001/attempts", page([attemptDoc(1)]))
        code, out, _ = self.run_("task", "9001")
        self.assertEqual(code, 0)
        self.assertIn("task 9001: job 42, index 3", out)
        lines = out.splitlines()
        # Agents are told apart by their hostname, beside the id.
        self.assertIn(f"agent      {AGENT} (node-017)", lines)
        self.assertIn(
            "ATTEMPT  STATE   AGENT                                 HOSTNAME  STARTED", out
        )
        self.assertIn(f"      1  failed  {AGENT}  node-017  2026-11-28", out)
        self.assertIn("exit status 1", out)

    def test_openjdTask(self) -> None:
        """
        An OpenJD task's status (its openjd_status line) and parameter
        values are shown; a native task has neither line.
        """
        doc = taskDoc(
            status="rendering frame 3",
            parameters={"Pass": {"type": "STRING", "value": "beauty"},
                        "Frame": {"type": "INT", "value": "3"}},
        )  # fmt: skip
        self.opener.on("GET", "/api/v1/tasks/9001", doc)
        self.opener.on("GET", "/api/v1/tasks/9001/attempts", page([]))
        _, out, _ = self.run_("task", "9001")
        lines = out.splitlines()
        self.assertIn("status      rendering frame 3", lines)
        self.assertIn("parameters  Frame=3, Pass=beauty", lines)

    def test_taskOwnCommandQuoted(self) -> None:
        self.opener.on(
            "GET", "/api/v1/tasks/9001", taskDoc(command=["render", "a b", "it's"], agent=None)
        )
        self.opener.on("GET", "/api/v1/tasks/9001/attempts", page([]))
        _, out, _ = self.run_("task", "9001")
        lines = out.splitlines()
        self.assertIn("""command    render 'a b' 'it'"'"'s'""", lines)
        self.assertIn("agent      -", lines)

    def test_taskRetry(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc(state="failed"))
        self.opener.on("POST", "/api/v1/tasks/9001/retry", taskDoc(state="queued"))
        code, out, _ = self.run_("task", "9001", "--retry", "--json")
        self.assertEqual((code, json.loads(out)["state"]), (0, "queued"))

    def test_agent(self) -> None:
        href = f"/api/v1/agents/{AGENT}"
        self.opener.on("GET", href, agentDoc())
        self.opener.on("PATCH", href, agentDoc(enabled=False, state="disabled"))
        self.opener.on("GET", f"{href}/tasks", page([taskDoc()]))
        self.opener.on("GET", f"{href}/failures", page([]))
        code, out, _ = self.run_("agent", AGENT, "--disable")
        self.assertEqual(code, 0)
        self.assertEqual(self.opener.sent[1].body, {"enabled": False})
        self.assertEqual(self.opener.sent[3].query, {"limit": "5"})
        self.assertIn(f"agent {AGENT}: node-017", out)
        self.assertIn("state          disabled", out)
        self.assertIn("last seen      59s ago", out)
        self.assertIn("current tasks:\n  ID  INDEX", out)
        self.assertIn("latest failures:\nnone", out)

    def test_agentUsageReadable(self) -> None:
        """
        An agent's usage in units a person reads, os and version on lines
        of their own.
        """
        href = f"/api/v1/agents/{AGENT}"
        usage = {"cpu_percent": 12.2, "load_avg": [0.2, 0.4, 0.5], "ram_used_mb": 3174,
                 "ram_free_mb": 20890, "disk_free_mb": 82227,
                 "io": {"disk_read_bytes": 91234567, "disk_write_bytes": 1234567,
                        "net_recv_bytes": 7654321, "net_sent_bytes": 765432}}  # fmt: skip
        self.opener.on("GET", href, agentDoc(usage=usage))
        self.opener.on("GET", f"{href}/tasks", page([]))
        self.opener.on("GET", f"{href}/failures", page([attemptDoc(1)]))
        code, out, _ = self.run_("agent", AGENT)
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertIn("os             linux", lines)
        self.assertIn("version        1.0.0", lines)
        self.assertIn(
            "usage          cpu 12 %, load 0.2 0.4 0.5, ram 3.1 GiB used / 20.4 GiB free,"
            " disk 80.3 GiB free",
            lines,
        )
        self.assertIn(
            "io since boot  disk 87.0 MiB read / 1.2 MiB written, net 7.3 MiB in / 747.5 KiB out",
            lines,
        )
        self.assertIn(f"      1  failed  {AGENT}  node-017  2026-11-28", out)

    def test_usageText(self) -> None:
        self.assertEqual(usage_text({}), "")
        self.assertEqual(usage_text({"cpu_percent": 73.5, "ram_free_mb": 23000}),
                         "cpu 74 %, ram 22.5 GiB free")  # fmt: skip
        # A single load figure; and what this version does not know, as is.
        self.assertEqual(usage_text({"load_avg": 1.25, "gpu_temp_c": 71}),
                         "load 1.25, gpu_temp_c 71")  # fmt: skip
        self.assertEqual([bytes_text(n) for n in (0, 1023, 1024, 1536 * 1024**3, 2**60 * 3)],
                         ["0 B", "1023 B", "1.0 KiB", "1.5 TiB", "3072.0 PiB"])  # fmt: skip

    def test_agentByHostname(self) -> None:
        """
        Operators know machines by hostname: a name that is not an id is
        looked up in the list of agents.
        """
        other = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"
        href = f"/api/v1/agents/{AGENT}"
        self.opener.on(
            "GET", "/api/v1/agents", page([agentDoc(other, hostname="node-001"), agentDoc()])
        )
        self.opener.on("PATCH", href, agentDoc(enabled=False, state="disabled"))
        code, out, _ = self.run_("agent", "node-017", "--disable", "--json")
        self.assertEqual((code, json.loads(out)["state"]), (0, "disabled"))
        self.assertEqual(self.opener.sent[-1].path, href)

    def test_agentHostnameUnknownOrAmbiguous(self) -> None:
        """
        A name that names no agent, or several, is a bad argument: one line
        and status 2.
        """
        other = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"
        self.opener.on("GET", "/api/v1/agents", page([agentDoc(other), agentDoc()]))
        self.assertFails(
            ["agent", "node-999"], 2, "no agent id starts with 'node-999', and no agent is named so"
        )
        self.assertFails(
            ["agent", "node-017"], 2, f"2 agents are named 'node-017': {other}, {AGENT}"
        )
        self.assertFails(
            ["agent", " "], 2, "give an agent id, a unique prefix of one, or a hostname"
        )

    def test_agentByIdPrefix(self) -> None:
        """
        A unique prefix of an agent's id will do, in either case, as with
        git's commits.
        """
        other = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"
        href = f"/api/v1/agents/{AGENT}"
        self.opener.on(
            "GET", "/api/v1/agents", page([agentDoc(other, hostname="node-001"), agentDoc()])
        )
        self.opener.on("PATCH", href, agentDoc(enabled=False, state="disabled"))
        self.opener.on("GET", f"{href}/tasks", page([]))
        self.opener.on("GET", f"{href}/failures", page([]))
        for prefix in ("6f1c", "6F1C0B9E-52"):
            code, out, _ = self.run_("agent", prefix, "--disable")
            self.assertEqual(code, 0)
            self.assertTrue(out.startswith(f"agent {AGENT}: node-017\n"), out)
            self.assertEqual(self.opener.sent[1].path, href)
            self.assertEqual(self.opener.sent[1].body, {"enabled": False})
            del self.opener.sent[:]

    def test_agentPrefixUnknownOrAmbiguous(self) -> None:
        third = "6f1c77aa-0000-4000-8000-000000000000"
        self.opener.on(
            "GET", "/api/v1/agents", page([agentDoc(), agentDoc(third, hostname="node-018")])
        )
        self.assertFails(
            ["agent", "0e9"], 2, "no agent id starts with '0e9', and no agent is named so"
        )
        self.assertFails(
            ["agent", "6f1c"],
            2,
            f"2 agent ids start with '6f1c': {AGENT} (node-017), {third} (node-018)",
        )
        self.assertEqual({s.path for s in self.opener.sent}, {"/api/v1/agents"})

    def test_agentEnableJSON(self) -> None:
        href = f"/api/v1/agents/{AGENT}"
        self.opener.on("GET", href, agentDoc(enabled=False))
        self.opener.on("PATCH", href, agentDoc())
        code, out, _ = self.run_("agent", AGENT, "--enable", "--json")
        self.assertEqual((code, json.loads(out)), (0, agentDoc()))
        self.assertEqual(self.opener.sent[1].body, {"enabled": True})

    def test_stats(self) -> None:
        self.opener.on("GET", "/api/v1/master", masterDoc())
        code, out, _ = self.run_("stats")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertIn("master            dev-master 0.1.0", lines)
        self.assertIn("requests          2 total, 1 in flight, avg 1.413 ms, max 1.89 ms", lines)
        self.assertIn("database          12 queries, avg 1.609 ms, ready", lines)
        self.assertIn("agents connected  1", lines)
        self.assertIn("talkback in       Heartbeat 1, Hello 1", lines)
        self.assertIn("GET     /healthz     200      1    1.89    1.89", lines)

    def test_statsJSON(self) -> None:
        self.opener.on("GET", "/api/v1/master", masterDoc())
        _, out, _ = self.run_("stats", "--json")
        self.assertEqual(json.loads(out), masterDoc())


class SteerTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc())

    def test_cancel(self) -> None:
        self.opener.on("POST", "/api/v1/jobs/42/cancel", jobDoc(state="canceled"))
        code, out, _ = self.run_("cancel", "42")
        self.assertEqual((code, out), (0, "job 42 canceled: now canceled, 10/40 tasks done\n"))

    def test_pause(self) -> None:
        self.opener.on("PATCH", "/api/v1/jobs/42", jobDoc(state="paused"))
        self.assertEqual(
            self.run_("pause", "42")[1], "job 42 paused: now paused, 10/40 tasks done\n"
        )
        self.assertEqual(self.opener.sent[-1].body, {"paused": True})
        self.run_("pause", "42", "--stop-running")
        self.assertEqual(self.opener.sent[-1].body, {"paused": True, "stop_running": True})

    def test_resumeAndRetry(self) -> None:
        self.opener.on("PATCH", "/api/v1/jobs/42", jobDoc(state="queued"))
        self.opener.on("POST", "/api/v1/jobs/42/retry", jobDoc(state="queued"))
        self.assertEqual(self.run_("resume", "42")[0], 0)
        self.assertEqual(self.opener.sent[-1].body, {"paused": False})
        code, out, _ = self.run_("--json", "retry", "42")
        self.assertEqual((code, json.loads(out)["state"]), (0, "queued"))
        self.assertEqual(self.opener.sent[-1].path, "/api/v1/jobs/42/retry")

    def test_retryPausedJob(self) -> None:
        """
        A retry does not resume a paused job: masterctl says so, on stderr,
        so that nobody waits in vain.
        """
        self.opener.on("POST", "/api/v1/jobs/42/retry", jobDoc(state="paused", paused=True))
        note = "masterctl: job 42 is paused: its retried tasks wait until `masterctl resume 42`\n"
        code, out, err = self.run_("retry", "42")
        self.assertEqual((code, out), (0, "job 42 retried: now paused, 10/40 tasks done\n"))
        self.assertEqual(err, note)
        code, out, err = self.run_("--json", "retry", "42")
        self.assertEqual((code, json.loads(out)["state"], err), (0, "paused", note))
        self.opener.on("POST", "/api/v1/jobs/42/retry", jobDoc(state="queued"))
        self.assertEqual(self.run_("retry", "42"), (0, "job 42 retried: now queued, 10/40 tasks"
                                                       " done\n", ""))  # fmt: skip

    def test_resumeFinished(self) -> None:
        """
        The master refuses to resume a finished job (409), as to cancel one:
        one line, status 1.
        """
        self.opener.on(
            "PATCH",
            "/api/v1/jobs/42",
            error(409, "conflict", "job 42 is done; only unfinished jobs can be resumed",
                  state="done"),
        )  # fmt: skip
        self.assertFails(["resume", "42"], 1, "job 42 is done; only unfinished jobs can be resumed")

    def test_conflict(self) -> None:
        self.opener.on(
            "POST",
            "/api/v1/jobs/42/cancel",
            error(
                409,
                "conflict",
                "job 42 is done; only unfinished jobs can be canceled",
                state="done",
            ),
        )
        self.assertFails(
            ["cancel", "42"], 1, "job 42 is done; only unfinished jobs can be canceled"
        )


class ErrorTests(Base):
    def test_notFound(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/7", error(404, "not_found", "no job 7", kind="job"))
        self.assertFails(["job", "7"], 1, "no job 7")

    def test_unreachable(self) -> None:
        self.opener.on(
            "GET",
            "/api/v1/jobs",
            OSError(111, "Connection refused"),
        )
        self.assertFails(["jobs"], 1, f"cannot reach the master at {URL}: Connection refused")

    def test_unauthorizedWithoutToken(self) -> None:
        self.terminal.environ = {"MASTERD_URL": URL}
        self.opener.on("GET", "/api/v1/jobs", error(401, "unauthorized", "no bearer token"))
        self.assertFails(
            ["jobs"], 1, "no bearer token (no token: set MASTERD_TOKEN or pass --token)"
        )

    def test_forbidden(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc())
        self.opener.on(
            "POST", "/api/v1/jobs/42/cancel", error(403, "forbidden", "role viewer may not")
        )
        self.assertFails(["cancel", "42"], 1, "role viewer may not")

    def test_multiLineMessageIsOneLine(self) -> None:
        self.opener.on("GET", "/api/v1/master", error(500, "internal_error", "a\nb\n"))
        self.assertFails(["stats"], 1, "a b")

    def test_htmlPage(self) -> None:
        html = b"<html><title>504 Gateway Time-out</title><body>\n<h1>x</h1></body></html>"
        self.opener.on("GET", "/api/v1/master", Reply(raw=html, status=504))
        err = self.assertFails(["stats"], 1)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn("504 Gateway Time-out", err)

    def test_interrupted(self) -> None:
        self.opener.on("GET", "/api/v1/master", KeyboardInterrupt())
        code, _, err = self.run_("stats")
        self.assertEqual(code, 130)
        self.assertNotIn("Traceback", err)

    def test_consoleScript(self) -> None:
        """
        The real entry point, in a process of its own: a network error is
        one line on stderr and status 1.
        """
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "masterd.client.cli",
                "--url",
                f"http://127.0.0.1:{port}",
                "jobs",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            env=dict(os.environ),
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr,
            f"masterctl: cannot reach the master at http://127.0.0.1:{port}: Connection refused\n",
        )

    def test_mainReturnsArgumentErrors(self) -> None:
        self.patch(sys, "stderr", io.StringIO())
        self.assertEqual(cliMain(["job", "x"]), 2)


class LogTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.log = "/api/v1/tasks/9001/log"

    def logReply(self, text: str, attempt: int, nextAfter: int) -> Reply:
        headers = {"X-Masterd-Attempt": str(attempt), "X-Masterd-Next-After": str(nextAfter)}
        return Reply(raw=text.encode(), headers=headers)

    def test_print(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc())
        self.opener.on("GET", self.log, self.logReply("Fra:7\nSaved\n", 2, 2))
        code, out, err = self.run_("log", "9001")
        self.assertEqual((code, out, err), (0, "Fra:7\nSaved\n", ""))
        self.run_("log", "9001", "--attempt", "1", "--after", "10")
        self.assertEqual(self.opener.sent[-1].query, {"attempt": "1", "after": "10"})

    def test_notRunYet(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc(state="queued", attempt=0, agent=None))
        code, out, err = self.run_("log", "9001")
        self.assertEqual((code, out), (0, ""))
        self.assertEqual(err, "masterctl: task 9001 is queued and has not run yet: no log\n")
        self.assertEqual(len(self.opener.sent), 1)

    def test_follow(self) -> None:
        self.opener.on(
            "GET",
            "/api/v1/tasks/9001",
            taskDoc(),  # masterctl's first read
            taskDoc(),
            taskDoc(),
            taskDoc(state="done", exit_code=0),
        )
        self.opener.on("GET", self.log, self.logReply("a\n", 2, 1))
        self.opener.on(
            "GET", f"{self.log}?after=1", self.logReply("", 2, 1), self.logReply("b\n", 2, 2)
        )
        code, out, err = self.run_("log", "9001", "-f", "--interval", "0.5")
        self.assertEqual((code, out), (0, "a\nb\n"))
        self.assertEqual(err, "masterctl: task 9001 is done (exit code 0)\n")
        self.assertEqual(self.terminal.slept, [0.5, 0.5])

    def test_followNoticesEnd(self) -> None:
        """
        Between two reads of the log, the task is looked at every 0.5 s
        (one small request): its end, and the rest of its log, come then.
        """
        self.opener.on(
            "GET",
            "/api/v1/tasks/9001",
            self.timeline((0, taskDoc()), (3.2, taskDoc(state="done", exit_code=0))),
        )
        self.opener.on("GET", self.log, self.logReply("a\n", 2, 1))
        self.opener.on("GET", f"{self.log}?after=1", self.timeline(
            (0, self.logReply("", 2, 1)), (3, self.logReply("b\n", 2, 2))))  # fmt: skip
        code, out, err = self.run_("log", "9001", "-f", "--interval", "10")
        self.assertEqual((code, out), (0, "a\nb\n"))
        self.assertEqual(err, "masterctl: task 9001 is done (exit code 0)\n")
        self.assertEqual(self.terminal.time - 1000.0, 3.5)
        self.assertEqual(self.terminal.slept, [0.5] * 7)
        task, log = "GET /api/v1/tasks/9001", "GET /api/v1/tasks/9001/log"
        self.assertEqual(self.opener.paths(), [task, task, log] + [task] * 7 + [task, log])

    def test_followFailedTask(self) -> None:
        self.opener.on(
            "GET",
            "/api/v1/tasks/9001",
            taskDoc(attempt=1),
            taskDoc(attempt=1),
            taskDoc(attempt=2, state="failed", exit_code=3, error="exit status 3"),
        )
        self.opener.on("GET", self.log, self.logReply("one\n", 1, 1))
        self.opener.on("GET", f"{self.log}?after=1", self.logReply("x\n", 2, 2))
        self.opener.on("GET", f"{self.log}?attempt=1&after=1", self.logReply("", 1, 1))
        self.opener.on("GET", f"{self.log}?attempt=2", self.logReply("two\n", 2, 1))
        code, out, err = self.run_("log", "--follow", "9001")
        self.assertEqual((code, out), (1, "one\ntwo\n"))
        self.assertEqual(
            err.splitlines(),
            [
                "masterctl: task 9001: attempt 2 begins",
                "masterctl: task 9001 is failed (exit code 3): exit status 3",
            ],
        )

    def test_followRidesOutTransientErrors(self) -> None:
        self.opener.on(
            "GET",
            "/api/v1/tasks/9001",
            taskDoc(),
            error(503, "database_unavailable", "try again shortly: down"),
            taskDoc(state="done"),
        )
        self.opener.on("GET", self.log, self.logReply("a\n", 2, 1))
        code, out, err = self.run_("log", "-f", "9001")
        self.assertEqual((code, out), (0, "a\n"))
        self.assertIn("masterctl: try again shortly: down (trying again in 2s)\n", err)

    def test_followGivesUpOnOtherErrors(self) -> None:
        self.opener.on(
            "GET", "/api/v1/tasks/9001", taskDoc(), error(404, "not_found", "no task 9001")
        )
        self.assertFails(["log", "-f", "9001"], 1, "no task 9001")


class WatchTests(Base):
    def states(self, *documents: dict[str, Any]) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", *documents)

    def test_progressLine(self) -> None:
        job = Job(
            Client(URL, None)._transport,
            jobDoc(tasks=counts(done=2, running=1, queued=1, waiting=4)),
        )
        self.assertEqual(
            progress_line(job),
            "job 42 running  [########----------------------]  25%  done 2/8  running 1  queued 1"
            "  waiting 4  failed 0",
        )

    def test_notATerminal(self) -> None:
        """
        Off a terminal, a line when something changed and none otherwise;
        exit 0 when the job is done.
        """
        self.states(
            self.timeline(
                (0, jobDoc(tasks=counts(queued=4))),
                (5, jobDoc(tasks=counts(done=2, running=2))),
                (7.2, jobDoc(state="done", tasks=counts(done=4))),
            )
        )
        code, out, err = self.run_("job", "42", "--watch")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out.splitlines(),
            [
                "job 42 running  [------------------------------]   0%  done 0/4  running 0"
                "  queued 4  failed 0",
                "job 42 running  [###############---------------]  50%  done 2/4  running 2"
                "  queued 0  failed 0",
                "job 42 done  [##############################] 100%  done 4/4  running 0"
                "  queued 0  failed 0",
            ],
        )
        # A line every 2 s at most; a look at the job every 0.5 s, so that
        # its end (at 7.2 s) is shown at 7.5 s.
        self.assertEqual(self.terminal.slept, [0.5] * 15)

    def test_heartbeat(self) -> None:
        """
        An unchanged line is printed again once a minute, to show the watch
        is alive.
        """
        self.states(
            self.timeline(
                (0, jobDoc(tasks=counts(queued=4))),
                (HEARTBEAT_S + 5, jobDoc(state="failed", tasks=counts(failed=4))),
            )
        )
        code, out, _ = self.run_("job", "42", "--watch", "--interval", "10")
        self.assertEqual(code, 1)
        lines = out.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[0], lines[1])
        self.assertIn("job 42 failed", lines[2])

    def test_terminal(self) -> None:
        """
        On a terminal, one line redrawn in place; a newline at the end.
        """
        self.states(
            jobDoc(tasks=counts(queued=4)), jobDoc(state="canceled", tasks=counts(canceled=4))
        )
        code, out, _ = self.run_("job", "42", "--watch", tty=True)
        self.assertEqual(code, 1)
        self.assertTrue(out.startswith("\rjob 42 running"))
        self.assertEqual(out.count("\r"), 2)
        self.assertTrue(out.endswith("  canceled 4\n"), repr(out))
        self.assertEqual(out.count("\n"), 1)

    def test_narrowTerminal(self) -> None:
        """
        On a narrow terminal the bar narrows, then goes, then the line is
        cut: a line that wrapped could not be redrawn in place.
        """
        job = Job(Client(URL, None)._transport, jobDoc(tasks=counts(done=2, queued=2)))
        self.assertEqual(
            progress_line(job, 80),
            "job 42 running  [########-------]  50%  done 2/4  running 0  queued 2  failed 0",
        )
        self.assertEqual(
            progress_line(job, 60), "job 42 running  done 2/4  running 0  queued 2  failed 0"
        )
        self.assertEqual(progress_line(job, 20), "job 42 running  don")
        self.terminal.columns = 50
        self.states(jobDoc(state="done", tasks=counts(done=4)))
        _, out, _ = self.run_("job", "42", "--watch", tty=True)
        self.assertEqual(max(len(line) for line in out.split("\r")), 50)

    def test_transientErrors(self) -> None:
        """
        A failed look between two polls is left to the next poll, which
        reports it and tries again at the interval.
        """
        unavailable = error(503, "database_unavailable", "try again shortly")
        self.states(self.timeline((0, jobDoc()), (1, unavailable), (5, jobDoc(state="done"))))
        code, _, err = self.run_("job", "42", "--watch")
        self.assertEqual(code, 0)
        self.assertEqual(err.count("try again shortly (trying again in 2s)"), 2)
        self.assertEqual(self.terminal.slept, [0.5] * 4 + [2.0] * 2)

    def test_tooManyTransientErrors(self) -> None:
        self.states(jobDoc(), OSError(111, "Connection refused"))
        code, _, err = self.run_("job", "42", "--watch", tty=True)
        self.assertEqual(code, 1)
        # The first poll fails after its looks in between; then no more
        # looks, only the polls every 2 s, ten tried again.
        self.assertEqual(self.terminal.slept, [0.5] * 4 + [2.0] * 10)
        self.assertEqual(err.count("(trying again in 2s)"), 10)
        self.assertTrue(
            err.endswith(f"masterctl: cannot reach the master at {URL}: Connection refused\n")
        )

    def test_endNoticedWithinHalfASecond(self) -> None:
        """
        However long the interval, the job is looked at every 0.5 s (one
        small request) and its end is shown then.
        """
        self.states(self.timeline((0, jobDoc()), (3.2, jobDoc(state="done", tasks=counts(done=4)))))
        code, out, _ = self.run_("job", "42", "--watch", "--interval", "10")
        self.assertEqual(code, 0)
        self.assertEqual(self.terminal.time - 1000.0, 3.5)
        self.assertEqual(self.terminal.slept, [0.5] * 7)
        self.assertEqual(self.opener.paths(), ["GET /api/v1/jobs/42"] * 8)
        self.assertEqual(len(out.splitlines()), 2)
        self.assertIn("job 42 done", out.splitlines()[-1])

    def test_jobDeletedWhileWatched(self) -> None:
        self.states(jobDoc(), error(404, "not_found", "no job 42"))
        code, _, err = self.run_("job", "42", "--watch")
        self.assertEqual((code, err), (1, "masterctl: no job 42\n"))

    def test_json(self) -> None:
        """
        With --json, no progress: the job's document once it is finished.
        """
        self.states(jobDoc(), jobDoc(state="done"))
        code, out, _ = self.run_("job", "42", "--watch", "--json")
        self.assertEqual((code, json.loads(out)), (0, jobDoc(state="done")))


class RealMasterTests(TestCase):
    """
    The client and masterctl against the master's real HTTP application
    over a real database. The client blocks, so it runs in a thread while
    the reactor serves the master.
    """

    timeout = 60

    async def test_againstRealMaster(self) -> None:
        api = await startAPI(self)
        client = Client(api.base, TOKENS["operator"], timeout=10)

        def scenario() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            first = client.submit(
                title="shot 10",
                command=["render", "{start}", "{end}"],
                frames="1-10",
                chunk=3,
                priority=70,
                requirements={"cpus": 2, "tags": ["linux"]},
                env={"A": "b"},
                metadata={"shot": 10},
            )
            second = client.submit(
                title="comp", command=["comp"], frames=[1, 2], depends_on=[first], paused=True
            )
            seen["first"] = (first.state, first.task_counts.total, first.requirements.cpus)
            seen["created_at"] = first.created_at
            seen["second"] = (second.state, second.parent_ids)
            seen["parents"] = [p.id for p in second.parents()]
            seen["children"] = [c.id for c in first.refresh().children()]
            seen["listed"] = [j.id for j in client.jobs(limit=1)]
            seen["ids"] = (first.id, second.id)
            tasks = list(client.job(first.id).tasks(limit=2))
            seen["frames"] = [t.frames for t in tasks]
            task = client.task(tasks[0].id)
            seen["task"] = (task.job().id, task.attempts(), task.log(), task.agent())
            seen["canceled"] = first.cancel().state
            seen["taskStates"] = {t.state for t in first.tasks()}
            seen["retried"] = first.retry().state
            for call in [
                lambda: client.job(999999),
                lambda: second.delete(),
                lambda: Client(api.base, TOKENS["viewer"]).job(first.id).cancel(),
                lambda: client.submit(title="x", command=["r"], frames="5-1"),
                lambda: Client(api.base, "wrong").master(),
            ]:
                try:
                    call()
                except MasterdError as e:
                    seen.setdefault("errors", []).append((e.status, e.code, e.details))
            seen["master"] = client.master().name
            first.cancel()
            first.delete()
            try:
                first.refresh()
            except MasterdError as e:
                seen["deleted"] = e.code
            return seen

        seen = await deferToThread(scenario)
        firstID, secondID = seen["ids"]
        self.assertEqual(seen["first"], ("queued", 4, 2))
        self.assertEqual(seen["created_at"].utcoffset().total_seconds(), 0)
        self.assertEqual(seen["second"], ("paused", [firstID]))
        self.assertEqual(seen["parents"], [firstID])
        self.assertEqual(seen["children"], [secondID])
        self.assertEqual(seen["listed"], [secondID, firstID])
        self.assertEqual(seen["frames"], [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]])
        self.assertEqual(seen["task"], (firstID, [], "", None))
        self.assertEqual(seen["canceled"], "canceled")
        self.assertEqual(seen["taskStates"], {"canceled"})
        self.assertEqual(seen["retried"], "queued")
        self.assertEqual(
            seen["errors"],
            [
                (404, "not_found", {"kind": "job", "id": "999999"}),
                (409, "conflict", {"state": "paused"}),
                (403, "forbidden", {}),
                (422, "invalid_field", {"field": "frames"}),
                (401, "unauthorized", {}),
            ],
        )
        self.assertEqual(seen["master"], "test")
        self.assertEqual(seen["deleted"], "not_found")

        def cli(*argv: str) -> tuple[int, str, str]:
            out, err = io.StringIO(), io.StringIO()
            environ = {"MASTERD_URL": api.base, "MASTERD_TOKEN": TOKENS["operator"]}
            status = run(list(argv), Runtime(out=out, err=err, environ=environ, tty=False))
            return status, out.getvalue(), err.getvalue()

        status, out, err = await deferToThread(
            cli,
            "submit",
            "-q",
            "--title",
            "cli job",
            "--frames",
            "1-3",
            "--cpus",
            "1",
            "--env",
            "K=V",
            "--",
            "render",
            "--frame",
            "{frame}",
        )
        self.assertEqual((status, err), (0, ""))
        jobID = int(out)
        status, out, _ = await deferToThread(cli, "jobs", "--limit", "1")
        self.assertEqual(status, 0)
        self.assertRegex(out.splitlines()[1], rf"^ *{jobID}  queued +50 +0/3  operator  cli job$")
        status, out, _ = await deferToThread(cli, "--json", "job", str(jobID))
        document = json.loads(out)
        self.assertEqual(document["command"], ["render", "--frame", "{frame}"])
        self.assertEqual((document["env"], document["requirements"]["cpus"]), ({"K": "V"}, 1))
        status, out, _ = await deferToThread(cli, "tasks", str(jobID))
        self.assertEqual(len(out.splitlines()), 4)
        status, out, _ = await deferToThread(cli, "cancel", str(jobID))
        self.assertEqual(out, f"job {jobID} canceled: now canceled, 0/3 tasks done\n")
        # A finished job is not resumed: the master says why, in one line.
        status, out, err = await deferToThread(cli, "resume", str(jobID))
        self.assertEqual(
            (status, out, err),
            (1, "", f"masterctl: job {jobID} is canceled; only unfinished jobs can be resumed\n"),
        )
        status, out, _ = await deferToThread(cli, "job", str(jobID), "--watch")
        self.assertEqual(status, 1)
        status, out, err = await deferToThread(cli, "job", "999999")
        self.assertEqual((status, out, err), (1, "", "masterctl: no job 999999\n"))
        status, out, _ = await deferToThread(cli, "stats")
        self.assertIn("master            test", out)
