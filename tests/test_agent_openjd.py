"""
The reference agent's OpenJD tasks (masterd.agent.openjd): payloads built
from small templates with openjd-model as the master builds them, run
through the real openjd-sessions with real processes and the real reactor.
What the actions did is checked from their own output, written to files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from openjd.model import (
    StepParameterSpaceIterator,
    create_job,
    decode_job_template,
    model_to_object,
    preprocess_job_parameters,
)
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from masterd.agent.openjd import pathMappingRules
from masterd.agent.runner import Runner
from masterd.agent.tap import Options


def payloads(
    template: dict[str, Any], values: dict[str, Any] | None = None, jobID: int = 1
) -> dict[str, list[dict[str, Any]]]:
    """
    The C{openjd} of each task of each step (by step name), as the assign
    message carries it (docs/openjd.md).
    """
    decoded = decode_job_template(template=template)
    here = Path.cwd()
    job = create_job(
        job_template=decoded,
        job_parameter_values=preprocess_job_parameters(
            job_template=decoded,
            job_parameter_values={k: str(v) for k, v in (values or {}).items()},
            job_template_dir=here,
            current_working_dir=here,
        ),
    )
    jobPart = {
        "id": jobID,
        "name": job.name,
        "parameters": {
            k: {"type": p.type.value, "value": p.value} for k, p in (job.parameters or {}).items()
        },
        "environments": [model_to_object(model=e) for e in job.jobEnvironments or ()],
    }
    steps: dict[str, list[dict[str, Any]]] = {}
    for step in job.steps:
        stepPart = {
            "name": step.name,
            "script": model_to_object(model=step.script),
            "environments": [model_to_object(model=e) for e in step.stepEnvironments or ()],
        }
        spaces = (
            list(StepParameterSpaceIterator(space=step.parameterSpace))
            if step.parameterSpace is not None
            else [{}]
        )
        steps[step.name] = [
            {
                "job": jobPart,
                "step": stepPart,
                "parameters": {k: {"type": v.type.value, "value": v.value} for k, v in p.items()},
            }
            for p in spaces
        ]
    return steps


def sh(script: str, **action: Any) -> dict[str, Any]:
    return {"command": "sh", "args": ["-c", script], **action}


def environment(name: str, events: str) -> dict[str, Any]:
    """
    An environment that writes its entering and exiting to the events file.
    """
    return {
        "name": name,
        "script": {
            "actions": {
                "onEnter": sh(f"echo 'enter {name}' >> {events}"),
                "onExit": sh(f"echo 'exit {name}' >> {events}"),
            }
        },
    }


def template(steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "specificationVersion": "jobtemplate-2023-09",
        "name": "test job",
        "steps": steps,
        **extra,
    }


def frames(spec: str) -> dict[str, Any]:
    return {"taskParameterDefinitions": [{"name": "Frame", "type": "INT", "range": spec}]}


class OpenJDTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        self.events = self.dir / "events"
        self.sent: list[dict[str, Any]] = []

    def runner(self, linger: float = 0.5, **kwargs: Any) -> Runner:
        runner = Runner(
            reactor,
            self.dir / "state",
            self.sent.append,
            pollInterval=0.05,
            openjdLinger=linger,
            **kwargs,
        )
        runner.start()
        self.addCleanup(runner.stopOpenJD)
        self.addCleanup(runner.stop)
        return runner

    async def until(self, condition: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; sent: {self.sent}")
            await deferLater(reactor, 0.02)

    async def sessionsEnded(self, runner: Runner) -> None:
        await self.until(lambda: not runner.openjd.byID)

    def final(self, taskID: int) -> dict[str, Any] | None:
        for m in self.sent:
            if m["type"] == "task_update" and m["task_id"] == taskID and m["state"] != "running":
                return m
        return None

    def lines(self, taskID: int) -> list[str]:
        return [
            line
            for m in self.sent
            if m["type"] == "log" and m["task_id"] == taskID
            for line in m["lines"]
        ]

    def updates(self, taskID: int) -> list[dict[str, Any]]:
        return [
            m
            for m in self.sent
            if m["type"] == "task_update" and m["task_id"] == taskID and m["state"] == "running"
        ]

    def eventLines(self) -> list[str]:
        return self.events.read_text().splitlines() if self.events.exists() else []

    def task(self, taskID: int, openjd: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"task_id": taskID, "attempt": 1, "command": None, "openjd": openjd, **extra}

    async def test_environmentsOncePerSession(self) -> None:
        """
        Two tasks of a job, one after the other: the job's and the step's
        environments are entered once, before the first, and exited once,
        in reverse order, after the linger that follows the second.
        """
        ev = self.events
        step = {
            "name": "Render",
            "parameterSpace": frames("1-2"),
            "stepEnvironments": [environment("StepEnv", str(ev))],
            "script": {
                "actions": {
                    "onRun": sh(
                        f"echo 'task {{{{Task.Param.Frame}}}}' >> {ev};"
                        " echo rendered {{Task.Param.Frame}}"
                    )
                }
            },
        }
        tasks = payloads(template([step], jobEnvironments=[environment("JobEnv", str(ev))]))
        runner = self.runner()
        runner.run(self.task(1, tasks["Render"][0]))
        self.assertEqual(runner.listed(), [{"task_id": 1, "attempt": 1}])
        await self.until(lambda: self.final(1) is not None)
        final = dict(self.final(1) or {})
        # What it used: tests/test_agent_usage.py.
        self.assertIn("wall_s", final.pop("usage"))
        self.assertEqual(
            final,
            {"type": "task_update", "task_id": 1, "attempt": 1, "state": "done", "exit_code": 0},
        )
        self.assertEqual(self.eventLines(), ["enter JobEnv", "enter StepEnv", "task 1"])
        self.assertIn("rendered 1", self.lines(1))
        runner.run(self.task(2, tasks["Render"][1]))
        await self.until(lambda: self.final(2) is not None)
        self.assertEqual((self.final(2) or {})["state"], "done")
        self.assertEqual(len(runner.openjd.byID), 1)
        await self.sessionsEnded(runner)
        self.assertEqual(
            self.eventLines(),
            ["enter JobEnv", "enter StepEnv", "task 1", "task 2", "exit StepEnv", "exit JobEnv"],
        )
        # The second task's log has its own output, not the first's.
        self.assertIn("rendered 2", self.lines(2))
        self.assertNotIn("rendered 1", self.lines(2))
        self.assertEqual(
            runner.listed(), [{"task_id": 1, "attempt": 1}, {"task_id": 2, "attempt": 1}]
        )
        runner.acknowledged(1, 1)
        runner.acknowledged(2, 1)
        self.assertEqual(runner.listed(), [])

    async def test_stepChange(self) -> None:
        """
        The next task is of another step of the job: the first step's
        environments are exited, the second's entered; the job's stay.
        """
        ev = str(self.events)

        def step(name: str) -> dict[str, Any]:
            return {
                "name": name,
                "stepEnvironments": [environment(f"{name}Env", ev)],
                "script": {"actions": {"onRun": sh(f"echo 'task {name}' >> {ev}")}},
            }

        tasks = payloads(
            template([step("A"), step("B")], jobEnvironments=[environment("JobEnv", ev)])
        )
        runner = self.runner()
        runner.run(self.task(1, tasks["A"][0]))
        await self.until(lambda: self.final(1) is not None)
        runner.run(self.task(2, tasks["B"][0]))
        await self.until(lambda: self.final(2) is not None)
        await self.sessionsEnded(runner)
        self.assertEqual([(self.final(t) or {})["state"] for t in (1, 2)], ["done", "done"])
        self.assertEqual(
            self.eventLines(),
            [
                "enter JobEnv",
                "enter AEnv",
                "task A",
                "exit AEnv",
                "enter BEnv",
                "task B",
                "exit BEnv",
                "exit JobEnv",
            ],
        )

    async def test_twoAtOnce(self) -> None:
        """
        Two tasks of a job at the same time: a session each, each entering
        the job's environment.
        """
        ev = str(self.events)
        step = {
            "name": "S",
            "parameterSpace": frames("1-2"),
            "script": {"actions": {"onRun": sh("sleep 0.3")}},
        }
        tasks = payloads(template([step], jobEnvironments=[environment("JobEnv", ev)]))
        runner = self.runner(linger=0)
        runner.run(self.task(1, tasks["S"][0]))
        runner.run(self.task(2, tasks["S"][1]))
        self.assertEqual(len(runner.openjd.byID), 2)
        await self.until(lambda: self.final(1) is not None and self.final(2) is not None)
        await self.sessionsEnded(runner)
        self.assertEqual(sorted(self.eventLines()), ["enter JobEnv"] * 2 + ["exit JobEnv"] * 2)

    async def test_embeddedFiles(self) -> None:
        """
        Embedded files are written by openjd-sessions: a runnable script and
        a data file, both named in the action by their Task.File symbols.
        """
        out = self.dir / "copied"
        step = {
            "name": "S",
            "script": {
                "actions": {
                    "onRun": {
                        "command": "{{Task.File.Run}}",
                        "args": ["{{Task.File.Data}}", str(out)],
                    }
                },
                "embeddedFiles": [
                    {
                        "name": "Run",
                        "type": "TEXT",
                        "runnable": True,
                        "data": '#!/bin/sh\ncat "$1"\ncp "$1" "$2"\n',
                    },
                    {"name": "Data", "type": "TEXT", "data": "line one\nline two\n"},
                ],
            },
        }
        runner = self.runner(linger=0)
        runner.run(self.task(1, payloads(template([step]))["S"][0]))
        await self.until(lambda: self.final(1) is not None)
        self.assertEqual((self.final(1) or {})["state"], "done", self.lines(1))
        self.assertEqual(out.read_text(), "line one\nline two\n")
        lines = self.lines(1)
        self.assertIn("line one", lines)
        self.assertIn("line two", lines)

    async def test_openjdMessages(self) -> None:
        """
        openjd_progress (0 to 100) becomes the task's progress (0 to 1),
        openjd_status its status, openjd_fail the reason of its failure.
        """
        script = (
            "echo 'openjd_progress: 40'; echo 'openjd_status: rendering tile 3'; sleep 0.5;"
            " if [ {{Task.Param.Frame}} = 2 ]; then"
            " echo 'openjd_fail: no licence left'; exit 2; fi;"
            " echo 'openjd_progress: 100'"
        )
        step = {
            "name": "S",
            "parameterSpace": frames("1-2"),
            "script": {"actions": {"onRun": sh(script)}},
        }
        tasks = payloads(template([step]))
        runner = self.runner(linger=0)
        runner.run(self.task(1, tasks["S"][0]))
        runner.run(self.task(2, tasks["S"][1]))
        await self.until(lambda: self.final(1) is not None and self.final(2) is not None)
        for taskID in (1, 2):
            updates = self.updates(taskID)
            self.assertIn(0.4, [u.get("progress") for u in updates])
            self.assertIn("rendering tile 3", [u.get("status") for u in updates])
        self.assertEqual(self.updates(1)[-1].get("progress"), 1.0)
        self.assertEqual((self.final(1) or {})["state"], "done")
        final = self.final(2) or {}
        self.assertEqual(
            (final["state"], final["exit_code"], final["message"]), ("failed", 2, "no licence left")
        )
        self.assertIn("openjd_status: rendering tile 3", self.lines(1))

    async def test_cancelNotifyThenTerminate(self) -> None:
        """
        A cancel of a NOTIFY_THEN_TERMINATE action notifies it (SIGTERM,
        which the script traps and writes down) before it is terminated;
        the session then exits its environments.
        """
        ev, ready, notified = self.events, self.dir / "ready", self.dir / "notified"
        step = {
            "name": "S",
            "script": {
                "actions": {
                    "onRun": sh(
                        f"trap 'echo notified > {notified}; exit 1' TERM; touch {ready};"
                        " while true; do sleep 0.05; done",
                        cancelation={"mode": "NOTIFY_THEN_TERMINATE", "notifyPeriodInSeconds": 10},
                    )
                }
            },
        }
        runner = self.runner(linger=30)
        runner.run(
            self.task(
                1,
                payloads(template([step], jobEnvironments=[environment("JobEnv", str(ev))]))["S"][
                    0
                ],
            )
        )
        await self.until(ready.exists)
        started = time.monotonic()
        runner.cancel(1, 1, "job canceled")
        await self.until(lambda: self.final(1) is not None)
        self.assertLess(time.monotonic() - started, 8)
        final = self.final(1) or {}
        self.assertEqual((final["state"], final["message"]), ("failed", "stopped: job canceled"))
        self.assertEqual(notified.read_text(), "notified\n")
        # Canceled: the session ends at once, without its linger.
        await self.sessionsEnded(runner)
        self.assertEqual(self.eventLines(), ["enter JobEnv", "exit JobEnv"])

    async def test_cancelTerminate(self) -> None:
        """
        A TERMINATE action is killed at once: it sees no notice.
        """
        ready, notified = self.dir / "ready", self.dir / "notified"
        step = {
            "name": "S",
            "script": {
                "actions": {
                    "onRun": sh(
                        f"trap 'echo notified > {notified}; exit 1' TERM; touch {ready};"
                        " while true; do sleep 0.05; done",
                        cancelation={"mode": "TERMINATE"},
                    )
                }
            },
        }
        runner = self.runner()
        runner.run(self.task(1, payloads(template([step]))["S"][0]))
        await self.until(ready.exists)
        runner.cancel(1, 1, "job canceled")
        await self.until(lambda: self.final(1) is not None)
        self.assertEqual((self.final(1) or {})["message"], "stopped: job canceled")
        await self.sessionsEnded(runner)
        self.assertFalse(notified.exists())

    async def test_actionTimeout(self) -> None:
        """
        An action running past its timeout is canceled by openjd-sessions:
        the task fails, saying so.
        """
        step = {"name": "S", "script": {"actions": {"onRun": sh("sleep 30", timeout=1)}}}
        runner = self.runner()
        runner.run(self.task(1, payloads(template([step]))["S"][0]))
        await self.until(lambda: self.final(1) is not None)
        final = self.final(1) or {}
        self.assertEqual(final["state"], "failed")
        self.assertTrue(final["message"].startswith("the action timed out"), final)
        await self.sessionsEnded(runner)

    async def test_pathMapping(self) -> None:
        """
        The agent's path mapping rules apply to PATH parameters (of the
        job and of the task), and are given to the action as a file.
        """
        step = {
            "name": "S",
            "parameterSpace": {
                "taskParameterDefinitions": [
                    {"name": "Input", "type": "PATH", "range": ["/mnt/projects/a.exr"]}
                ]
            },
            "script": {
                "actions": {
                    "onRun": sh(
                        "echo job {{Param.Out}}; echo task {{Task.Param.Input}};"
                        " echo raw {{RawParam.Out}}; cat {{Session.PathMappingRulesFile}}"
                    )
                }
            },
        }
        tasks = payloads(
            template([step], parameterDefinitions=[{"name": "Out", "type": "PATH"}]),
            {"Out": "/mnt/projects/shot1/out"},
        )
        rules = pathMappingRules(
            [
                {
                    "source_path_format": "POSIX",
                    "source_path": "/mnt/projects",
                    "destination_path": "/data/projects",
                }
            ]
        )
        runner = self.runner(linger=0, pathMapping=rules)
        runner.run(self.task(1, tasks["S"][0]))
        await self.until(lambda: self.final(1) is not None)
        self.assertEqual((self.final(1) or {})["state"], "done", self.lines(1))
        lines = self.lines(1)
        self.assertIn("job /data/projects/shot1/out", lines)
        self.assertIn("task /data/projects/a.exr", lines)
        self.assertIn("raw /mnt/projects/shot1/out", lines)
        self.assertTrue(any('"/data/projects"' in line for line in lines), lines)

    async def test_environmentFails(self) -> None:
        """
        A job environment whose onEnter fails fails the task, with the
        environment named; the session ends.
        """
        env = {"name": "Broken", "script": {"actions": {"onEnter": sh("exit 4")}}}
        step = {"name": "S", "script": {"actions": {"onRun": sh("echo never")}}}
        runner = self.runner()
        runner.run(self.task(1, payloads(template([step], jobEnvironments=[env]))["S"][0]))
        await self.until(lambda: self.final(1) is not None)
        final = self.final(1) or {}
        self.assertEqual(final["state"], "failed")
        self.assertIn("entering the job environment Broken", final["message"])
        self.assertNotIn("never", self.lines(1))
        await self.sessionsEnded(runner)

    async def test_agentStops(self) -> None:
        """
        The agent stopping cancels its running OpenJD tasks, hands them back
        (rejected: not a failure) and exits the sessions' environments.
        """
        ev, ready = self.events, self.dir / "ready"
        step = {"name": "S", "script": {"actions": {"onRun": sh(f"touch {ready}; sleep 60")}}}
        runner = self.runner(linger=30)
        runner.run(
            self.task(
                1,
                payloads(template([step], jobEnvironments=[environment("JobEnv", str(ev))]))["S"][
                    0
                ],
            )
        )
        await self.until(ready.exists)
        await runner.stopOpenJD()
        final = self.final(1) or {}
        self.assertEqual(final["state"], "rejected")
        self.assertEqual(self.eventLines(), ["enter JobEnv", "exit JobEnv"])
        self.assertEqual(runner.openjd.byID, {})
        # Assigned while stopping: handed back at once.
        runner.run(self.task(2, payloads(template([step]))["S"][0]))
        self.assertEqual((self.final(2) or {})["state"], "rejected")

    async def test_badPayload(self) -> None:
        runner = self.runner()
        runner.run(self.task(1, {"job": {"id": 1}, "step": {"name": "S", "script": {}}}))
        final = self.final(1) or {}
        self.assertEqual(final["state"], "failed")
        self.assertIn("cannot read the OpenJD payload", final["message"])

    async def test_nativeTasksUnchanged(self) -> None:
        """
        A task whose openjd is null runs its command as before.
        """
        runner = self.runner()
        runner.run({"task_id": 1, "attempt": 1, "command": ["echo", "native"], "openjd": None})
        await self.until(lambda: self.final(1) is not None)
        self.assertEqual(self.lines(1), ["native"])
        self.assertEqual(os.listdir(self.dir / "state" / "tasks"), [])


class PathMappingOptionTests(SynchronousTestCase):
    def parse(self, config: str, *argv: str) -> Any:
        path = Path(self.mktemp())
        path.write_text(config)
        options = Options()
        options.parseOptions(["--master", "ws://a", "--token", "t", "--config", str(path), *argv])
        return options["settings"]

    def test_rules(self) -> None:
        s = self.parse(
            "path-mapping:\n"
            "  - {source_path_format: POSIX, source_path: /mnt/p, destination_path: /data/p}\n"
            "  - {source_path_format: WINDOWS, source_path: 'P:\\', destination_path: /data/p}\n"
            "openjd-linger-s: 3\n"
        )
        self.assertEqual(
            [r.to_dict() for r in s["path_mapping"]],
            [
                {
                    "source_path_format": "POSIX",
                    "source_path": "/mnt/p",
                    "destination_path": "/data/p",
                },
                {
                    "source_path_format": "WINDOWS",
                    "source_path": "P:\\",
                    "destination_path": "/data/p",
                },
            ],
        )
        self.assertEqual(s["openjd_linger_s"], 3.0)
        self.assertEqual(self.parse("{}", "--openjd-linger-s", "0.5")["openjd_linger_s"], 0.5)
        self.assertEqual(self.parse("{}")["path_mapping"], [])

    def test_problems(self) -> None:
        for config in (
            "path-mapping: {source_path: /a}\n",
            "path-mapping: [{source_path_format: POSIX, source_path: /a}]\n",
            "path-mapping: [{source_path_format: URI, source_path: 's3://a',"
            " destination_path: /b}]\n",
            "path-mapping: [{source_path_format: POSIX, source_path: '', destination_path: /b}]\n",
            "openjd-linger-s: soon\n",
            "openjd-linger-s: -1\n",
        ):
            with self.assertRaises(SystemExit, msg=config):
                self.parse(config)
