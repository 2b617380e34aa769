"""
masterctl and layers: job files (YAML and JSON) and the flags over them,
the one-line messages for bad files, layers in `job`, tasks by layer,
re-renders, and the `limit` and `project` commands; against a fake opener,
then against the master's real HTTP application over a real database.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from masterd.client.cli import Runtime, run
from masterd.jobs import lifecycle

from ._api import TOKENS, startAPI
from .test_cli import Base
from .test_client import Reply, attemptDoc, error, jobDoc, page, taskDoc
from .test_client_layers import layerDoc, layeredJobDoc, limitDoc, projectDoc
from .test_jobs_api import AGENT

#: sim, then render once sim is done, then comp frame by frame as the
#: renders covering each of its frames are done.
SHOT_YAML = """\
# shot 010: simulate, render, composite
title: shot 010
priority: 60
env:
  SHOT: "010"
layers:
  - name: sim
    command: [hython, sim.py, --start, "{start}", --end, "{end}"]
    frames: 1-6
    chunk: 6
    limits: [houdini]
    requirements: {cpus: 8, ram_mb: 32000}
  - name: render
    command: [karma, --frame, "{frame}", shot.usd]
    frames: 1-6
    chunk: 3
    depends_on: [sim]
  - name: comp
    command: [nuke, -x, -F, "{frame}", comp.nk]
    frames: 1-6
    chunk: 2
    limits: [nuke]
    depends_on:
      - {layer: render, mode: frame}
"""

SHOT: dict[str, Any] = {
    "title": "shot 010",
    "priority": 60,
    "env": {"SHOT": "010"},
    "layers": [
        {"name": "sim", "command": ["hython", "sim.py", "--start", "{start}", "--end", "{end}"],
         "frames": "1-6", "chunk": 6, "limits": ["houdini"],
         "requirements": {"cpus": 8, "ram_mb": 32000}},
        {"name": "render", "command": ["karma", "--frame", "{frame}", "shot.usd"],
         "frames": "1-6", "chunk": 3, "depends_on": ["sim"]},
        {"name": "comp", "command": ["nuke", "-x", "-F", "{frame}", "comp.nk"],
         "frames": "1-6", "chunk": 2, "limits": ["nuke"],
         "depends_on": [{"layer": "render", "mode": "frame"}]},
    ],
}  # fmt: skip


class FileBase(Base):
    def setUp(self) -> None:
        super().setUp()
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.opener.on("POST", "/api/v1/jobs", Reply(layeredJobDoc(), 201))

    def write(self, name: str, text: str | bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        return path

    def sent(self) -> Any:
        [request] = self.opener.sent
        return request.body


class SubmitFileTests(FileBase):
    def test_yaml(self) -> None:
        code, out, err = self.run_("submit", "--file", self.write("shot.yaml", SHOT_YAML))
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(self.sent(), SHOT)
        self.assertEqual(out, "submitted job 42: 'shot 10 beauty' (3 layers, 40 tasks, running)\n")

    def test_json(self) -> None:
        code, out, _ = self.run_(
            "submit", "-q", "--file", self.write("shot.json", json.dumps(SHOT))
        )
        self.assertEqual((code, out), (0, "42\n"))
        self.assertEqual(self.sent(), SHOT)

    def test_jsonWithoutItsSuffix(self) -> None:
        """
        A file that starts with { is read as JSON, whatever its name.
        """
        self.run_("submit", "--file", self.write("shot.job", json.dumps(SHOT, indent=2)))
        self.assertEqual(self.sent(), SHOT)

    def test_yamlFlowMapping(self) -> None:
        """
        A .yaml file that starts with { is YAML still (JSON could not read
        its bare words).
        """
        self.run_("submit", "--file", self.write("t.yaml", "{title: t, layers: [{name: a}]}"))
        self.assertEqual(self.sent(), {"title": "t", "layers": [{"name": "a"}]})

    def test_stdin(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        runtime = Runtime(out=out, err=err, environ=self.terminal.environ, opener=self.opener,
                          stdin=io.StringIO(SHOT_YAML), tty=False)  # fmt: skip
        self.assertEqual(run(["submit", "--file", "-"], runtime), 0, err.getvalue())
        self.assertEqual(self.sent(), SHOT)

    def test_flagsOverAFile(self) -> None:
        """
        Scalars replace the file's; env and requirements are merged; tags,
        limits and dependencies are added, each once.
        """
        path = self.write("shot.yaml", SHOT_YAML + "requirements: {cpus: 2, tags: [linux]}\n"
                          "limits: [houdini]\n")  # fmt: skip
        code, _, err = self.run_(
            "submit", "--file", path, "--title", "shot 010 v2", "--priority", "80",
            "--project", "shot010", "--env", "LOOK=dark", "--cpus", "4", "--gpu-memory-mb",
            "8000", "--tag", "gpu", "--tag", "linux", "--limits", "houdini,arnold", "--limits",
            "nuke", "--depends-on", "12:frame", "--depends-on", "7", "--paused", "--preemptible",
            "--max-running", "3", "--stall-timeout", "600", "--timeout", "7200",
            "--max-retries", "1", "--weight", "2", "--cwd", "/shots/010",
        )  # fmt: skip
        self.assertEqual((code, err), (0, ""))
        body = self.sent()
        self.assertEqual(body["layers"], SHOT["layers"])
        del body["layers"]
        self.assertEqual(
            body,
            {"title": "shot 010 v2", "priority": 80, "project": "shot010",
             "env": {"SHOT": "010", "LOOK": "dark"},
             "requirements": {"cpus": 4, "tags": ["linux", "gpu"], "gpu_memory_mb": 8000},
             "limits": ["houdini", "arnold", "nuke"],
             "depends_on": [{"job": 12, "mode": "frame"}, 7], "paused": True,
             "preemptible": True, "max_running": 3, "stall_timeout_s": 600,
             "task_timeout_s": 7200, "max_retries": 1, "weight": 2, "cwd": "/shots/010"},
        )  # fmt: skip

    def test_plainJobFile(self) -> None:
        """
        A file without layers takes the command after -- and --frames; a
        title left out is the command's, else the file's name.
        """
        path = self.write("beauty.yaml", "chunk: 5\nrequirements: {gpus: 1}\n")
        code, _, err = self.run_("submit", "--file", path, "--frames", "1-10", "--",
                                 "render", "{frame}")  # fmt: skip
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(self.sent(), {"title": "render {frame}", "chunk": 5, "frames": "1-10",
                                       "requirements": {"gpus": 1},
                                       "command": ["render", "{frame}"]})  # fmt: skip
        self.opener.sent.clear()
        self.run_("submit", "--file", self.write("beauty.yaml", SHOT_YAML.replace("title:", "x:")))
        self.assertEqual(self.sent()["title"], "beauty")

    def test_flagsWithoutAFileAsBefore(self) -> None:
        self.run_("submit", "--frames", "1-4", "--depends-on", "3:frame", "--limits", "nuke",
                  "--project", "p", "--", "render", "{frame}")  # fmt: skip
        self.assertEqual(self.sent(), {"title": "render {frame}", "frames": "1-4",
                                       "command": ["render", "{frame}"], "project": "p",
                                       "depends_on": [{"job": 3, "mode": "frame"}],
                                       "limits": ["nuke"]})  # fmt: skip

    def test_refusedByTheMaster(self) -> None:
        self.opener.on("POST", "/api/v1/jobs", error(422, "invalid_field",
                       "layers[1].depends_on[0]: no layer 'sims' in this job",
                       field="layers[1].depends_on[0]"))  # fmt: skip
        self.assertFails(["submit", "--file", self.write("shot.yaml", SHOT_YAML)], 1,
                         "layers[1].depends_on[0]: no layer 'sims' in this job")  # fmt: skip


class BadFileTests(FileBase):
    def refused(self, argv: list[str], message: str) -> None:
        """
        Status 2, the one line, and no request.
        """
        self.assertFails(argv, 2, message)
        self.assertEqual(self.opener.sent, [])

    def test_missingAndUnreadable(self) -> None:
        path = os.path.join(self.directory, "nope.yaml")
        self.refused(["submit", "--file", path], f"{path}: No such file or directory")
        self.refused(["submit", "--file", self.directory], f"{self.directory}: Is a directory")
        path = self.write("latin1.yaml", b"title: caf\xe9\n")
        self.refused(["submit", "--file", path], f"{path}: not UTF-8 text")

    def test_yamlSyntax(self) -> None:
        path = self.write("shot.yaml", "title: a\nlayers:\n  - name: sim\n   command: [x\n")
        code, _, err = self.run_("submit", "--file", path)
        self.assertEqual(code, 2)
        self.assertRegex(err, rf"^masterctl: {path} line 4, column \d+: .+\n$")
        path = self.write("shot.yaml", "title: [a\n")
        code, _, err = self.run_("submit", "--file", path)
        self.assertRegex(err, rf"^masterctl: {path} line 2, column 1: .*expected ',' or ']'.*\n$")

    def test_jsonSyntax(self) -> None:
        path = self.write("shot.json", '{\n  "title": "a",\n}\n')
        self.refused(["submit", "--file", path],
                     f"{path} line 3, column 1: Expecting property name enclosed in double"
                     " quotes")  # fmt: skip

    def test_notAMapping(self) -> None:
        mapping = "a job file holds one mapping of a job's fields (title, layers, ...)"
        for text, what in [("- a\n- b\n", "a list"), ("shot 010\n", "text"), ("3\n", "a number")]:
            path = self.write("shot.yaml", text)
            self.refused(["submit", "--file", path], f"{path}: {mapping}, not {what}")
        path = self.write("shot.yaml", "# nothing yet\n")
        self.refused(["submit", "--file", path],
                     f"{path}: empty; a job file holds one mapping of a job's fields")  # fmt: skip

    def test_duplicateKeys(self) -> None:
        path = self.write("shot.yaml", "title: a\nlayers: []\nlayers: []\n")
        self.refused(
            ["submit", "--file", path],
            f"{path} line 3, column 1: the key 'layers' is given twice in one mapping",
        )
        path = self.write("shot.json", '{"title": "a", "env": {"A": "1", "A": "2"}}')
        self.refused(["submit", "--file", path],
                     f"{path}: the key 'A' is given twice in one object")  # fmt: skip
        # Keys merged in from an anchor may be overridden, as YAML says.
        path = self.write("shot.yaml", "base: &b {chunk: 2}\nlayer: {<<: *b, chunk: 3}\n"
                          "title: t\n")  # fmt: skip
        self.assertEqual(self.run_("submit", "--file", path)[0], 0)

    def test_notJSON(self) -> None:
        path = self.write("shot.yaml", "title: a\nmetadata:\n  due: 2027-01-01\n")
        self.refused(["submit", "--file", path],
                     f"{path}: metadata.due: 2027-01-01 was read as a date; quote it to make it"
                     " text")  # fmt: skip
        path = self.write("shot.yaml", "title: a\nenv: {1: x}\n")
        self.refused(["submit", "--file", path], f"{path}: env: the key 1 is not text; quote it")
        path = self.write("shot.yaml", "title: a\nlayers: [{name: a, weight: .inf}]\n")
        self.refused(["submit", "--file", path],
                     f"{path}: layers[0].weight: inf is not a number JSON can carry")  # fmt: skip

    def test_unquotedPlaceholder(self) -> None:
        """
        [render, {frame}] in YAML is a list holding a mapping: said so,
        with the quoting that fixes it.
        """
        path = self.write(
            "shot.yaml", SHOT_YAML.replace('"{frame}", shot.usd', "{frame}, shot.usd")
        )
        self.refused(
            ["submit", "--file", path],
            f"{path}: layers[1].command[2]: {{frame}} was read as a YAML mapping; quote it:"
            ' "{frame}"',
        )

    def test_flagsThatDoNotFit(self) -> None:
        path = self.write("shot.yaml", "title: a\nrequirements: 4\n")
        self.refused(
            ["submit", "--file", path, "--cpus", "2"],
            f"{path}: requirements must be a mapping for the flags to add to it",
        )
        path = self.write("shot.yaml", "title: a\nlimits: nuke\n")
        self.refused(["submit", "--file", path, "--limits", "x"],
                     f"{path}: limits must be a list for the flags to add to it")  # fmt: skip
        path = self.write("shot.yaml", SHOT_YAML)
        self.refused(["submit", "--file", path, "--frames", "1-10"],
                     f"{path} has layers: each gives its own command, frames and chunk, so"
                     " --frames does not go with it")  # fmt: skip
        self.refused(["submit", "--file", path, "--", "render"],
                     f"{path} has layers: each gives its own command, frames and chunk, so a"
                     " command after -- does not go with it")  # fmt: skip

    def test_argumentMistakes(self) -> None:
        for argv, text in [
            (["submit", "--", "render"], "--frames (or give --file)"),
            (["submit", "--file", "x.yaml", "--"], "give the command after --"),
            (["submit", "--frames", "1", "--depends-on", "12:whole", "--", "r"], "12:frame"),
            (["submit", "--frames", "1", "--depends-on", "0", "--", "r"], "a job id"),
            (["submit", "--frames", "1", "--max-running", "0", "--", "r"], "positive"),
        ]:
            err = self.assertFails(argv, 2)
            self.assertIn(text, err, argv)
        self.assertEqual(self.opener.sent, [])


class ShowTests(Base):
    def test_jobLayers(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", layeredJobDoc())
        code, out, _ = self.run_("job", "42")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertIn("project       shot010", lines)
        self.assertIn("priority      70 (weight 1), preemptible", lines)
        self.assertIn("limits        houdini", lines)
        self.assertIn("max running   8", lines)
        self.assertIn("task timeout  1h00m (stalled: 10m00s without a log line)", lines)
        layers = out[out.index("\nlayers:\n") + len("\nlayers:\n") :]
        self.assertEqual(
            layers,
            "NAME    STATE    DONE/TOTAL  RUNNING  FRAMES  LIMITS        DEPENDS ON\n"
            "sim     done            0/6        0  1-6 /6  houdini       -\n"
            "render  running         0/6        0  1-6     -             sim\n"
            "comp    waiting         0/6        0  1-6     houdini,nuke  render:frame (cancel),"
            " job 12:frame\n",
        )

    def test_oneCommandJobHasNoLayerTable(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc(layers=[layerDoc("main", 0)]))
        _, out, _ = self.run_("job", "42")
        self.assertNotIn("layers:", out)

    def test_tasksByLayer(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", layeredJobDoc())
        comp = [taskDoc(9001, layer="comp"), taskDoc(9002, layer="comp")]
        self.opener.on("GET", "/api/v1/jobs/42/tasks", page(comp))
        code, out, _ = self.run_("tasks", "42", "--layer", "comp")
        self.assertEqual(code, 0)
        self.assertEqual(self.opener.sent[-1].query, {"layer": "comp", "limit": "500"})
        header, first, _ = out.splitlines()
        self.assertTrue(header.startswith("  ID  LAYER  INDEX  STATE"), header)
        self.assertTrue(first.startswith("9001  comp       3  running"), first)

    def test_tasksOfAnUnknownLayer(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", layeredJobDoc())
        self.assertFails(
            ["tasks", "42", "--layer", "encode"],
            2,
            "--layer: job 42 has no layer 'encode'; it has sim, render, comp",
        )
        self.assertEqual(self.opener.paths(), ["GET /api/v1/jobs/42"])

    def test_noTasksInLayer(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", layeredJobDoc())
        self.opener.on("GET", "/api/v1/jobs/42/tasks", page([]))
        code, out, err = self.run_("tasks", "42", "--layer", "comp", "--state", "done")
        self.assertEqual((code, out, err), (0, "", "masterctl: job 42 has no tasks done in"
                                                    " layer comp\n"))  # fmt: skip

    def test_taskLayerAndGpus(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc(layer="render"))
        self.opener.on("GET", "/api/v1/tasks/9001/attempts",
                       page([attemptDoc(1, state="preempted", gpu_devices=[0, 2])]))  # fmt: skip
        _, out, _ = self.run_("task", "9001")
        self.assertIn("layer      render", out.splitlines())
        self.assertIn("ATTEMPT  STATE      AGENT                                 HOSTNAME  GPUS",
                      out)  # fmt: skip
        self.assertIn("preempted", out)
        self.assertIn("node-017  0,2", out)

    def test_retryDone(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc(state="done"))
        self.opener.on("POST", "/api/v1/tasks/9001/retry", taskDoc(state="queued"))
        self.opener.on("GET", "/api/v1/tasks/9001/attempts", page([]))
        code, out, _ = self.run_("task", "9001", "--retry", "--done")
        self.assertEqual(code, 0)
        self.assertEqual(self.opener.sent[1].body, {"done": True})
        self.assertIn("state      queued", out.splitlines())
        self.opener.sent.clear()
        self.assertFails(["task", "9001", "--done"], 2,
                         "--done goes with --retry: masterctl task ID --retry --done")  # fmt: skip
        self.assertEqual(self.opener.sent, [])


class LimitTests(Base):
    def test_list(self) -> None:
        self.opener.on("GET", "/api/v1/limits", page([limitDoc(), limitDoc("houdini", max=2,
                       in_use=2, description="")]))  # fmt: skip
        code, out, _ = self.run_("limit", "list")
        self.assertEqual(code, 0)
        self.assertEqual(out, "NAME     MAX  IN USE  DESCRIPTION\n"
                              "nuke      20       3  Nuke render licences\n"
                              "houdini    2       2  -\n")  # fmt: skip
        code, out, _ = self.run_("limit", "list", "--json")
        self.assertEqual(len(json.loads(out)["items"]), 2)

    def test_listEmpty(self) -> None:
        self.opener.on("GET", "/api/v1/limits", page([]))
        self.assertEqual(self.run_("limit", "list"), (0, "", "masterctl: no limits\n"))

    def test_show(self) -> None:
        self.opener.on("GET", "/api/v1/limits/nuke", limitDoc())
        _, out, _ = self.run_("limit", "show", "nuke")
        lines = out.splitlines()
        self.assertEqual(lines[:4], ["limit nuke", "max          20", "in use       3",
                                     "description  Nuke render licences"])  # fmt: skip

    def test_set(self) -> None:
        self.opener.on("PUT", "/api/v1/limits/nuke", limitDoc(max=25))
        code, out, err = self.run_("limit", "set", "nuke", "25", "--description", "more")
        self.assertEqual((code, out, err), (0, "limit nuke set: max 25, 3 in use\n", ""))
        self.assertEqual(self.opener.sent[-1].body, {"max": 25, "description": "more"})

    def test_setKeepsDescription(self) -> None:
        self.opener.on("GET", "/api/v1/limits/nuke", limitDoc())
        self.opener.on("PUT", "/api/v1/limits/nuke", limitDoc(max=2))
        code, _, err = self.run_("limit", "set", "nuke", "2")
        self.assertEqual(code, 0)
        self.assertEqual(
            self.opener.sent[-1].body, {"max": 2, "description": "Nuke render licences"}
        )
        # Lowered below its use: said, not refused.
        self.assertEqual(
            err,
            "masterctl: 3 tasks hold nuke, more than its max: they run on, and none starts"
            " until fewer than 2 hold it\n",
        )

    def test_delete(self) -> None:
        self.opener.on("DELETE", "/api/v1/limits/nuke", Reply(status=204))
        self.assertEqual(self.run_("limit", "delete", "nuke"), (0, "limit nuke deleted\n", ""))
        _, out, _ = self.run_("limit", "delete", "nuke", "--json")
        self.assertEqual(json.loads(out), {"deleted": "/api/v1/limits/nuke"})
        self.opener.on("DELETE", "/api/v1/limits/nuke", error(409, "conflict",
                       "limit 'nuke' is named by unfinished jobs (42); finish or delete them"
                       " first"))  # fmt: skip
        self.assertFails(["limit", "delete", "nuke"], 1,
                         "limit 'nuke' is named by unfinished jobs (42); finish or delete them"
                         " first")  # fmt: skip

    def test_badArguments(self) -> None:
        for argv in [["limit"], ["limit", "set", "nuke"], ["limit", "set", "nuke", "-1"],
                     ["limit", "set", "nuke", "many"], ["limit", "show"]]:  # fmt: skip
            self.assertFails(argv, 2)
        self.assertEqual(self.opener.sent, [])


class ProjectTests(Base):
    def test_list(self) -> None:
        ops = projectDoc("ops", weight=1, active=0, queued=2, created_at=None, updated_at=None)
        self.opener.on("GET", "/api/v1/projects", page([projectDoc(), ops]))
        code, out, _ = self.run_("project", "list")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertEqual(lines[0], "NAME     WEIGHT  RUNNING  QUEUED  SINCE")
        self.assertTrue(lines[1].startswith("shot010       3       12      40  2026-11-"), lines)
        self.assertEqual(lines[2], "ops           1        0       2  (default weight)")

    def test_showSetDelete(self) -> None:
        self.opener.on("GET", "/api/v1/projects/shot%20010", projectDoc("shot 010"))
        self.opener.on("PUT", "/api/v1/projects/shot%20010", projectDoc("shot 010", weight=5))
        self.opener.on("DELETE", "/api/v1/projects/shot%20010", Reply(status=204))
        _, out, _ = self.run_("project", "show", "shot 010")
        lines = out.splitlines()
        self.assertEqual(lines[:5], ["project shot 010", "weight   3",
                                     "running  12 tasks (assigned or running)",
                                     "queued   40 tasks",
                                     "jobs     masterctl jobs --project 'shot 010'"])  # fmt: skip
        self.assertEqual(self.run_("project", "set", "shot 010", "5"),
                         (0, "project shot 010 set: weight 5\n", ""))  # fmt: skip
        self.assertEqual(self.opener.sent[-1].body, {"weight": 5})
        self.assertEqual(
            self.run_("project", "delete", "shot 010"),
            (0, "project shot 010's weight forgotten: it is 1 again\n", ""),
        )
        self.assertFails(["project", "set", "p", "0"], 2)

    def test_jobsByProject(self) -> None:
        self.opener.on("GET", "/api/v1/jobs", page([jobDoc()]))
        self.run_("jobs", "--project", "shot 010")
        self.assertEqual(self.opener.sent[-1].query["project"], "shot 010")


class RealMasterTests(TestCase):
    """
    masterctl against the master's real HTTP application and database.
    """

    timeout = 60

    async def test_layersFromFiles(self) -> None:
        api = await startAPI(self)
        directory = self.mktemp()
        os.makedirs(directory)
        files = {"shot.yaml": SHOT_YAML, "shot.json": json.dumps(SHOT),
                 "bad.yaml": "title: a\nlayers:\n  - name: [x\n"}  # fmt: skip
        for name, text in files.items():
            with open(os.path.join(directory, name), "w") as f:
                f.write(text)

        def cli(*argv: str) -> tuple[int, str, str]:
            out, err = io.StringIO(), io.StringIO()
            environ = {"MASTERD_URL": api.base, "MASTERD_TOKEN": TOKENS["operator"]}
            status = run(list(argv), Runtime(out=out, err=err, environ=environ, tty=False))
            return status, out.getvalue(), err.getvalue()

        async def masterctl(*argv: str, status: int = 0) -> str:
            code, out, err = await deferToThread(cli, *argv)
            self.assertEqual(code, status, (argv, out, err))
            return out if status == 0 else err

        # A limit a layer names must exist first.
        out = await masterctl("submit", "--file", os.path.join(directory, "shot.yaml"), status=1)
        self.assertIn("layers[0].limits[0]", out)
        self.assertEqual(
            await masterctl("limit", "set", "houdini", "2", "--description", "Houdini Engine"),
            "limit houdini set: max 2, 0 in use\n",
        )
        await masterctl("limit", "set", "nuke", "4")
        await masterctl("limit", "set", "nuke", "3")
        out = await masterctl("limit", "list")
        self.assertEqual(out, "NAME     MAX  IN USE  DESCRIPTION\n"
                              "houdini    2       0  Houdini Engine\n"
                              "nuke       3       0  -\n")  # fmt: skip
        self.assertIn("max          3", await masterctl("limit", "show", "nuke"))
        await masterctl("project", "set", "shot010", "3")

        yamlID = int(await masterctl("submit", "-q", "--file",
                                     os.path.join(directory, "shot.yaml")))  # fmt: skip
        out = await masterctl("submit", "--file", os.path.join(directory, "shot.json"),
                              "--title", "shot 010 from JSON", "--project", "shot010")  # fmt: skip
        self.assertRegex(out, r"^submitted job \d+: 'shot 010 from JSON' \(3 layers, 6 tasks,"
                              r" queued\)\n$")  # fmt: skip
        jsonID = int(out.split()[2].rstrip(":"))
        out = await masterctl("job", str(yamlID))
        self.assertIn("project       operator", out.splitlines())
        self.assertIn(
            "\nlayers:\n"
            "NAME    STATE    DONE/TOTAL  RUNNING  FRAMES  LIMITS   DEPENDS ON\n"
            "sim     queued          0/1        0  1-6 /6  houdini  -\n"
            "render  waiting         0/2        0  1-6 /3  -        sim\n"
            "comp    waiting         0/3        0  1-6 /2  nuke     render:frame\n",
            out,
        )
        document = json.loads(await masterctl("--json", "job", str(jsonID)))
        self.assertEqual((document["title"], document["project"]), ("shot 010 from JSON",
                                                                    "shot010"))  # fmt: skip
        self.assertEqual([la["name"] for la in document["layers"]], ["sim", "render", "comp"])
        out = await masterctl("project", "list")
        self.assertRegex(out, r"\nshot010 +3 +0 +1 ")

        out = await masterctl("tasks", str(yamlID), "--layer", "comp")
        rows = out.splitlines()[1:]
        self.assertEqual([row.split()[1:5] for row in rows],
                         [["comp", "3", "waiting", "1-2"], ["comp", "4", "waiting", "3-4"],
                          ["comp", "5", "waiting", "5-6"]])  # fmt: skip
        out = await masterctl("tasks", str(yamlID), "--layer", "encode", status=2)
        self.assertEqual(out, f"masterctl: --layer: job {yamlID} has no layer 'encode'; it has"
                              " sim, render, comp\n")  # fmt: skip
        out = await masterctl("submit", "--file", os.path.join(directory, "bad.yaml"), status=2)
        self.assertRegex(out, r"^masterctl: .*bad\.yaml line 4, column 1: .+\n$")

        # sim is rendered; a re-render of it queues it again, and only it.
        listed = json.loads(await masterctl("--json", "tasks", str(yamlID), "--layer", "sim"))
        [simID] = [task["id"] for task in listed["items"]]
        [a] = await api.pool.transaction(lambda txn: lifecycle.assign(txn, AGENT, [simID]))
        await api.pool.transaction(lambda txn: lifecycle.done(txn, AGENT, a.task_id, a.attempt))
        out = await masterctl("task", str(simID), "--retry", status=1)
        self.assertIn("done", out)
        out = await masterctl("task", str(simID), "--retry", "--done")
        self.assertIn("layer      sim", out.splitlines())
        self.assertIn("state      queued", out.splitlines())
        out = await masterctl("job", str(yamlID))
        self.assertIn("render  queued          0/2", out)

        out = await masterctl("limit", "delete", "nuke", status=1)
        self.assertRegex(out, r"^masterctl: limit 'nuke' is named by unfinished jobs .+\n$")
        for jobID in (yamlID, jsonID):
            await masterctl("cancel", str(jobID))
        self.assertEqual(await masterctl("limit", "delete", "nuke"), "limit nuke deleted\n")
        await masterctl("limit", "show", "nuke", status=1)
        await masterctl("project", "delete", "shot010")
        self.assertIn("weight   1 (the default)", await masterctl("project", "show", "shot010"))
