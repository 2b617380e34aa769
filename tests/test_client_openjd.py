"""
OpenJD templates through the client (C{Client.submit_openjd}) and masterctl
(C{submit --openjd TEMPLATE -p NAME=VALUE}), against the fake opener: the
body sent (part 1 of issue 16), the template read from a mapping, text or a
file, checked with openjd-model when it is importable and left to the master
when it is not, and YAML sent as text when PyYAML is missing.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from masterd_client import Client, MasterdError, check_openjd, openjd_submission
from masterd_client.cli import Runtime, run
from twisted.trial.unittest import SynchronousTestCase

from .test_client import FakeOpener, error, jobDoc

URL = "http://master.test:8080"

TEMPLATE: dict[str, Any] = {
    "specificationVersion": "jobtemplate-2023-09",
    "name": "Render {{Param.Scene}}",
    "parameterDefinitions": [
        {"name": "Scene", "type": "STRING", "default": "shot010"},
        {"name": "Frames", "type": "STRING", "default": "1-3"},
        {"name": "Quality", "type": "INT", "minValue": 1, "maxValue": 10, "default": 5},
    ],
    "steps": [
        {
            "name": "Render",
            "parameterSpace": {
                "taskParameterDefinitions": [
                    {"name": "Frame", "type": "INT", "range": "{{Param.Frames}}"}
                ]
            },
            "script": {
                "actions": {
                    "onRun": {
                        "command": "render",
                        "args": ["-q", "{{Param.Quality}}", "{{Task.Param.Frame}}"],
                    }
                }
            },
        }
    ],
}

YAML = """\
specificationVersion: jobtemplate-2023-09
name: Render {{Param.Scene}}
parameterDefinitions:
  - {name: Scene, type: STRING, default: shot010}
  - {name: Frames, type: STRING, default: "1-3"}
  - {name: Quality, type: INT, minValue: 1, maxValue: 10, default: 5}
steps:
  - name: Render
    parameterSpace:
      taskParameterDefinitions:
        - {name: Frame, type: INT, range: "{{Param.Frames}}"}
    script:
      actions:
        onRun:
          command: render
          args: ["-q", "{{Param.Quality}}", "{{Task.Param.Frame}}"]
"""


def openjdJob(jobID: int = 7) -> dict[str, Any]:
    return jobDoc(jobID, title="Render shot020", state="queued")


def hide(case: SynchronousTestCase, *modules: str) -> None:
    """
    Make C{modules} unimportable for the rest of the test, as where they
    are not installed (C{None} in sys.modules: import raises ImportError).
    """
    for name in [m for m in list(sys.modules) if m.split(".")[0] in modules] + list(modules):
        if name in sys.modules:
            case.addCleanup(sys.modules.__setitem__, name, sys.modules[name])
        else:
            case.addCleanup(sys.modules.pop, name, None)
        sys.modules[name] = None  # type: ignore[assignment]


def tempDir(case: SynchronousTestCase) -> Path:
    directory = tempfile.TemporaryDirectory()
    case.addCleanup(directory.cleanup)
    return Path(directory.name)


class SubmissionTests(SynchronousTestCase):
    def test_body(self) -> None:
        """
        The body is part 1's: the template and the values as given under
        C{openjd}, the job fields given beside it, the others left out.
        """
        body = openjd_submission(
            TEMPLATE,
            {"Scene": "shot020", "Quality": 7},
            priority=60,
            project="shot020",
            limits=("nuke",),
            paused=None,
            metadata={"shot": "020"},
        )
        self.assertEqual(
            body,
            {
                "openjd": {"template": TEMPLATE, "parameters": {"Scene": "shot020", "Quality": 7}},
                "priority": 60,
                "project": "shot020",
                "limits": ["nuke"],
                "metadata": {"shot": "020"},
            },
        )

    def test_noParameters(self) -> None:
        self.assertEqual(openjd_submission(TEMPLATE)["openjd"]["parameters"], {})

    def test_jsonText(self) -> None:
        self.assertEqual(openjd_submission(json.dumps(TEMPLATE))["openjd"]["template"], TEMPLATE)

    def test_yamlText(self) -> None:
        """
        YAML text is read with PyYAML when it is importable; without it,
        it is sent as it is, for the master to read.
        """
        self.assertEqual(openjd_submission(YAML)["openjd"]["template"], TEMPLATE)
        hide(self, "yaml")
        self.assertEqual(openjd_submission(YAML)["openjd"]["template"], YAML)

    def test_files(self) -> None:
        """
        A C{Path}, or a one-line string ending in C{.yaml}, C{.yml} or
        C{.json}, names a file holding the template.
        """
        directory = tempDir(self)
        (directory / "t.yaml").write_text(YAML, encoding="utf-8")
        (directory / "t.json").write_text(json.dumps(TEMPLATE), encoding="utf-8")
        for template in [directory / "t.yaml", str(directory / "t.yaml"), directory / "t.json"]:
            self.assertEqual(openjd_submission(template)["openjd"]["template"], TEMPLATE)
        hide(self, "yaml")
        self.assertEqual(openjd_submission(directory / "t.yaml")["openjd"]["template"], YAML)
        self.assertEqual(openjd_submission(directory / "t.json")["openjd"]["template"], TEMPLATE)

    def test_missingFile(self) -> None:
        self.assertRaises(FileNotFoundError, openjd_submission, "/nonexistent/render.yaml")

    def test_badText(self) -> None:
        """
        A template's text that is not JSON or YAML is the client's usual
        error, naming where, as the master would answer it.
        """
        e = self.assertRaises(MasterdError, openjd_submission, '{"name": ')
        self.assertEqual((e.status, e.code), (400, "invalid_field"))
        self.assertEqual(e.details, {"field": "openjd.template"})
        self.assertIn("the template line 1, column 10", e.message)
        e = self.assertRaises(MasterdError, openjd_submission, "- a\n- b\n")
        self.assertIn("one mapping, not a list", e.message)

    def test_notATemplate(self) -> None:
        self.assertRaises(TypeError, openjd_submission, 42)
        self.assertRaises(TypeError, openjd_submission, TEMPLATE, ["Frames=1-3"])


class LocalCheckTests(SynchronousTestCase):
    """
    With openjd-model importable (it comes with masterd), the template and
    values are checked before anything is sent.
    """

    def setUp(self) -> None:
        self.opener = FakeOpener().on("POST", "/api/v1/jobs", openjdJob())
        self.client = Client(URL, "tok", opener=self.opener)

    def test_valid(self) -> None:
        job = self.client.submit_openjd(TEMPLATE, {"Scene": "shot020"}, priority=60)
        self.assertEqual(job.id, 7)
        [sent] = self.opener.sent
        self.assertEqual(sent.path, "/api/v1/jobs")
        self.assertEqual(
            sent.body,
            {"openjd": {"template": TEMPLATE, "parameters": {"Scene": "shot020"}}, "priority": 60},
        )

    def test_checked(self) -> None:
        self.assertTrue(check_openjd(openjd_submission(TEMPLATE)))

    def test_badTemplate(self) -> None:
        """
        The model's message; C{details["field"]} the part at fault; nothing
        sent.
        """
        bad = json.loads(json.dumps(TEMPLATE))
        bad["steps"][0]["name"] = ""
        e = self.assertRaises(MasterdError, self.client.submit_openjd, bad)
        self.assertEqual((e.status, e.code), (400, "invalid_field"))
        self.assertEqual(e.details, {"field": "openjd.template.steps[0].name", "local": True})
        self.assertIn("String should have at least 1 character", e.message)
        self.assertEqual(self.opener.sent, [])

    def test_badVersion(self) -> None:
        e = self.assertRaises(
            MasterdError, self.client.submit_openjd, dict(TEMPLATE, specificationVersion="x")
        )
        self.assertEqual(e.details["field"], "openjd.template")
        self.assertIn("Unknown template version", e.message)

    def test_badValue(self) -> None:
        for parameters, field, words in [
            ({"Quality": 11}, "openjd.parameters.Quality", "must be at most 10"),
            ({"Quality": "x"}, "openjd.parameters.Quality", "integer"),
            ({"Bogus": "1"}, "openjd.parameters.Bogus", "not defined in the template"),
        ]:
            e = self.assertRaises(MasterdError, self.client.submit_openjd, TEMPLATE, parameters)
            self.assertEqual(e.details, {"field": field, "local": True})
            self.assertIn(words, e.message)
        self.assertEqual(self.opener.sent, [])

    def test_missingValue(self) -> None:
        template = json.loads(json.dumps(TEMPLATE))
        del template["parameterDefinitions"][0]["default"]
        e = self.assertRaises(MasterdError, self.client.submit_openjd, template)
        self.assertEqual(e.details["field"], "openjd.parameters.Scene")
        self.assertIn("Values missing for required job parameters: Scene", e.message)

    def test_yamlTextChecked(self) -> None:
        """
        YAML text is checked too: without PyYAML for the client's own
        reading, openjd-model reads it (it needs PyYAML itself).
        """
        e = self.assertRaises(MasterdError, self.client.submit_openjd, YAML, {"Quality": 0})
        self.assertEqual(e.details["field"], "openjd.parameters.Quality")

    def test_notValidated(self) -> None:
        """
        C{validate=False} leaves it to the master, whose error is raised.
        """
        self.opener.on(
            "POST",
            "/api/v1/jobs",
            error(400, "invalid_field", "Value (11) ...", field="openjd.parameters.Quality"),
        )
        e = self.assertRaises(
            MasterdError, self.client.submit_openjd, TEMPLATE, {"Quality": 11}, validate=False
        )
        self.assertEqual(e.details, {"field": "openjd.parameters.Quality"})
        self.assertEqual(len(self.opener.sent), 1)

    def test_withoutModel(self) -> None:
        """
        Where openjd-model is not installed, nothing is checked here: the
        master's answer is the error.
        """
        hide(self, "openjd")
        self.assertFalse(check_openjd(openjd_submission(TEMPLATE, {"Quality": 11})))
        self.opener.on(
            "POST",
            "/api/v1/jobs",
            error(400, "invalid_field", "too much", field="openjd.parameters.Quality"),
        )
        e = self.assertRaises(MasterdError, self.client.submit_openjd, TEMPLATE, {"Quality": 11})
        self.assertEqual(e.details, {"field": "openjd.parameters.Quality"})
        self.assertEqual(self.opener.sent[0].body["openjd"]["parameters"], {"Quality": 11})

    def test_relativePathsFromTheFile(self) -> None:
        """
        PATH parameters are taken from the template's directory, as
        openjd-model does; the values are sent as given.
        """
        directory = tempDir(self)
        template = dict(
            TEMPLATE,
            parameterDefinitions=[
                *TEMPLATE["parameterDefinitions"],
                {"name": "Out", "type": "PATH", "default": "out"},
            ],
        )
        (directory / "t.json").write_text(json.dumps(template), encoding="utf-8")
        self.client.submit_openjd(directory / "t.json", {"Out": "renders"})
        self.assertEqual(self.opener.sent[0].body["openjd"]["parameters"], {"Out": "renders"})


class CommandLineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = FakeOpener().on("POST", "/api/v1/jobs", openjdJob())
        self.directory = tempDir(self)
        self.path = self.directory / "render.yaml"
        self.path.write_text(YAML, encoding="utf-8")

    def masterctl(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        runtime = Runtime(
            out=out,
            err=err,
            stdin=io.StringIO(stdin),
            environ={"MASTERD_URL": URL, "MASTERD_TOKEN": "tok"},
            opener=self.opener,
            tty=False,
        )
        return run(list(argv), runtime), out.getvalue(), err.getvalue()

    def test_submit(self) -> None:
        status, out, err = self.masterctl(
            "submit", "--openjd", str(self.path), "-p", "Scene=shot020", "-p", "Quality=7",
            "--parameter", "Frames=1-10:2", "--priority", "60", "--project", "shot020",
            "--limits", "nuke,houdini", "--max-running", "4", "--paused",
        )  # fmt: skip
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, "submitted job 7: 'Render shot020' (40 tasks, queued)\n")
        self.assertEqual(
            self.opener.sent[0].body,
            {
                "openjd": {
                    "template": TEMPLATE,
                    "parameters": {"Scene": "shot020", "Quality": "7", "Frames": "1-10:2"},
                },
                "priority": 60,
                "project": "shot020",
                "limits": ["nuke", "houdini"],
                "max_running": 4,
                "paused": True,
            },
        )

    def test_quietAndStdin(self) -> None:
        status, out, err = self.masterctl("submit", "-q", "--openjd", "-", stdin=YAML)
        self.assertEqual((status, out, err), (0, "7\n", ""))
        self.assertEqual(self.opener.sent[0].body["openjd"]["template"], TEMPLATE)

    def test_valueWithEquals(self) -> None:
        self.masterctl("submit", "--openjd", str(self.path), "-p", "Scene=a=b")
        self.assertEqual(self.opener.sent[0].body["openjd"]["parameters"], {"Scene": "a=b"})

    def test_valueMakesABadStep(self) -> None:
        """
        A value the step cannot use (a bad range) is found when the job is
        instantiated: the model's path to it.
        """
        status, _, err = self.masterctl("submit", "--openjd", str(self.path), "-p", "Frames=1-3x2")
        self.assertEqual(status, 1)
        self.assertIn("taskParameterDefinitions[0] -> range: Unexpected 'x2'", err)

    def test_withoutYaml(self) -> None:
        """
        Where PyYAML is missing (a DCC's Python), the YAML file goes as its
        text (and openjd-model, which needs PyYAML, is not there either).
        """
        hide(self, "yaml", "openjd")
        status, _, err = self.masterctl("submit", "--openjd", str(self.path), "-p", "Quality=9")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            self.opener.sent[0].body, {"openjd": {"template": YAML, "parameters": {"Quality": "9"}}}
        )

    def test_oneLineErrors(self) -> None:
        """
        Bad input is one line on stderr, status 2, and nothing is sent; a
        template or value the model refuses is the master's kind of error,
        status 1.
        """
        template = str(self.path)
        (self.directory / "bad.yaml").write_text("name: [\n", encoding="utf-8")
        for argv, line in [
            (["--openjd", template, "-p", "Quality"], "-p: 'Quality' is not NAME=VALUE"),
            (["--openjd", template, "-p", "=3"], "-p: '=3' is not NAME=VALUE"),
            (["--openjd", template, "-p", "Q=1", "-p", "Q=2"], "the parameter Q is given twice"),
            (["--openjd", template, "--frames", "1-3"], "--frames does not go with --openjd"),
            (["--openjd", template, "--cpus", "4"], "--cpus does not go with --openjd"),
            (["--openjd", template, "--file", "j.yaml"], "--file does not go with --openjd"),
            (["--openjd", template, "--title", "x"], "--title does not go with --openjd"),
            (["--openjd", template, "--", "render"], "--openjd: the template's steps give the"),
            (["--openjd", template, "Quality=3"], "'Quality=3' is not an option; a parameter is"),
            (["-p", "Quality=3", "--frames", "1-3", "--", "x"], "-p NAME=VALUE goes with --openjd"),
            (["--openjd", "/nonexistent.yaml"], "/nonexistent.yaml: No such file or directory"),
            (["--openjd", str(self.directory / "bad.yaml")], "bad.yaml line 2, column 1:"),
        ]:
            status, out, err = self.masterctl("submit", *argv)
            self.assertEqual((status, out), (2, ""), argv)
            self.assertEqual(err.count("\n"), 1, err)
            self.assertTrue(err.startswith("masterctl: "), err)
            self.assertIn(line, err)
        status, out, err = self.masterctl("submit", "--openjd", template, "-p", "Quality=11")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, "masterctl: Value (11) for parameter Quality must be at most 10.\n")
        self.assertEqual(self.opener.sent, [])

    def test_modelMessageOneLine(self) -> None:
        bad = json.loads(json.dumps(TEMPLATE))
        bad["steps"][0]["name"] = ""
        path = self.directory / "bad.json"
        path.write_text(json.dumps(bad), encoding="utf-8")
        status, _, err = self.masterctl("submit", "--openjd", str(path))
        self.assertEqual(status, 1)
        self.assertEqual(
            err,
            "masterctl: 1 validation errors for JobTemplate steps[0] -> name:"
            " String should have at least 1 character\n",
        )

    def test_mastersError(self) -> None:
        hide(self, "openjd")
        self.opener.on(
            "POST",
            "/api/v1/jobs",
            error(400, "invalid_field", "1 validation errors\nsteps[0]:\n\tbad", field="x"),
        )
        status, _, err = self.masterctl("submit", "--openjd", str(self.path))
        self.assertEqual((status, err), (1, "masterctl: 1 validation errors steps[0]: bad\n"))

    def test_help(self) -> None:
        status, out, _ = self.masterctl("submit", "--help")
        self.assertEqual(status, 0)
        self.assertIn("--openjd TEMPLATE", out)
        self.assertIn("-p NAME=VALUE, --parameter NAME=VALUE", out)
