"""
OpenJD intake and mapping (issue 16, part 1; docs/openjd.md): templates and
parameter values submitted over HTTP against a real database, checked and
instantiated by openjd-model; steps as layers, parameter spaces as tasks,
host requirements as requirements, and the assign message's payload.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import msgspec
from openjd.model import ParameterValue, ParameterValueType, parse_model
from openjd.model.v2023_09 import Environment, HostRequirements, StepScript
from twisted.trial.unittest import SynchronousTestCase, TestCase

from masterd.errors import InvalidField
from masterd.jobs import lifecycle
from masterd.jobs.models import AssignedTask, JobSubmission
from masterd.jobs.spec import jobSpec
from masterd.jobs.views import TASK_PARAMETERS
from masterd.openjd import hostRequirements
from masterd.openjd._template import MAX_NODES, modelError, templateObject
from masterd.schema import decode

from ._api import API, startAPI

AGENT = "6f1c0b9e-52a5-4d36-9a8f-0d1c2b3a4e5f"

SCRIPT = {"actions": {"onRun": {"command": "echo", "args": ["hello"]}}}

#: Every parameter type, with defaults, allowed values, bounds and lengths.
TEMPLATE_YAML = """\
specificationVersion: jobtemplate-2023-09
name: "{{Param.Shot}} v{{Param.Version}}"
parameterDefinitions:
  - {name: Shot, type: STRING, minLength: 3, maxLength: 8, allowedValues: [sh010, sh020]}
  - {name: Version, type: INT, default: 1, minValue: 1, maxValue: 99}
  - {name: Scale, type: FLOAT, default: 0.5, minValue: 0.1, maxValue: 4}
  - {name: Scene, type: PATH, default: /projects/scene.blend}
  - {name: Frames, type: STRING, default: "1-3"}
jobEnvironments:
  - name: Farm
    script:
      actions:
        onEnter: {command: echo, args: [enter]}
        onExit: {command: echo, args: [exit]}
steps:
  - name: render
    parameterSpace:
      taskParameterDefinitions:
        - {name: Frame, type: INT, range: "{{Param.Frames}}"}
    stepEnvironments:
      - {name: Blender, variables: {BLENDER_SCALE: "{{Param.Scale}}"}}
    hostRequirements:
      amounts:
        - {name: amount.worker.vcpu, min: 4, max: 16}
        - {name: amount.worker.memory, min: 8192}
      attributes:
        - {name: attr.worker.os.family, anyOf: [linux]}
    script:
      actions:
        onRun: {command: blender, args: ["{{Param.Scene}}", "-f", "{{Task.Param.Frame}}"]}
  - name: encode
    dependencies: [{dependsOn: render}]
    script:
      actions:
        onRun: {command: ffmpeg, args: ["{{Param.Shot}}"]}
"""


def template(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """
    A template object of the given steps (one plain step by default).
    """
    body: dict[str, Any] = {
        "specificationVersion": "jobtemplate-2023-09",
        "name": "a job",
        "steps": list(steps) or [{"name": "main", "script": SCRIPT}],
    }
    body.update(fields)
    return body


def space(*definitions: dict[str, Any], combination: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"taskParameterDefinitions": list(definitions)}
    if combination is not None:
        found["combination"] = combination
    return found


def step(name: str = "main", **fields: Any) -> dict[str, Any]:
    return {"name": name, "script": SCRIPT, **fields}


class Base(TestCase):
    timeout = 120

    async def api(self, **kw: Any) -> API:
        return await startAPI(self, **kw)

    async def submitOpenJD(
        self, api: API, tpl: Any, parameters: dict[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"openjd": {"template": tpl}, **fields}
        if parameters is not None:
            body["openjd"]["parameters"] = parameters
        reply = await api.call("POST", "/api/v1/jobs", body)
        self.assertEqual(reply.code, 201, reply.body)
        result: dict[str, Any] = reply.json()
        return result

    async def taskParameters(self, api: API, jobID: int, layer: str | None = None) -> list[Any]:
        where = " AND l.name = %s" if layer else ""
        rows = await api.pool.query(
            # As the task document reads them (stored, or derived from the
            # frame for a one-INT space).
            f"SELECT {TASK_PARAMETERS.format(t='t', l='lp')} FROM tasks t"
            " JOIN layers l ON l.id = t.layer_id"
            f" WHERE t.job_id = %s{where} ORDER BY t.index",
            (jobID, layer) if layer else (jobID,),
        )
        return [r[0] for r in rows]

    async def refused(
        self, api: API, body: dict[str, Any], field: str, words: str, code: int = 400
    ) -> None:
        reply = await api.call("POST", "/api/v1/jobs", body)
        self.assertEqual(reply.code, code, (body, reply.body))
        error = reply.json()
        self.assertEqual(error["error"], "invalid_field", error)
        self.assertEqual(error["details"]["field"], field, error)
        self.assertTrue(error["message"].startswith(f"{field}: "), error)
        self.assertIn(words, error["message"], error)


def values(stored: dict[str, Any]) -> dict[str, str]:
    return {name: v["value"] for name, v in stored.items()}


class SubmitTests(Base):
    async def test_yamlTemplate(self) -> None:
        """
        A YAML template with every parameter type: values as a submitter
        writes them (strings and numbers), defaults applied, the title the
        formatted name, steps as layers, one task per frame in order.
        """
        api = await self.api()
        job = await self.submitOpenJD(
            api, TEMPLATE_YAML, {"Shot": "sh020", "Version": 7, "Scale": "2.5"}, priority=70
        )
        self.assertEqual(job["title"], "sh020 v7")
        self.assertEqual(job["priority"], 70)
        self.assertEqual(job["tasks"]["total"], 4)
        self.assertEqual([layer["name"] for layer in job["layers"]], ["render", "encode"])
        render, encode = job["layers"]
        self.assertEqual(render["frames"], "1-3")
        self.assertEqual(render["tasks"]["queued"], 3)
        self.assertEqual(encode["tasks"]["waiting"], 1)
        self.assertEqual(
            [(d["layer"], d["mode"]) for d in encode["depends_on"]], [("render", "layer")]
        )
        self.assertEqual(render["requirements"]["cpus"], 4)
        self.assertEqual(render["requirements"]["ram_mb"], 8192)
        self.assertEqual(render["requirements"].get("max_cpus"), 16)
        self.assertEqual(render["requirements"].get("os_family"), ["linux"])

        [(stored,)] = await api.pool.query("SELECT openjd FROM jobs WHERE id = %s", (job["id"],))
        self.assertEqual(stored["name"], "sh020 v7")
        self.assertEqual(
            stored["parameters"],
            {
                "Shot": {"type": "STRING", "value": "sh020"},
                "Version": {"type": "INT", "value": "7"},
                "Scale": {"type": "FLOAT", "value": "2.5"},
                "Scene": {"type": "PATH", "value": "/projects/scene.blend"},
                "Frames": {"type": "STRING", "value": "1-3"},
            },
        )
        self.assertEqual([e["name"] for e in stored["environments"]], ["Farm"])
        self.assertEqual(stored["extensions"], [])
        layers = await api.pool.query(
            "SELECT name, openjd FROM layers WHERE job_id = %s ORDER BY index", (job["id"],)
        )
        (_, renderOpenJD), (_, encodeOpenJD) = layers
        self.assertEqual(
            renderOpenJD["script"]["actions"]["onRun"]["args"],
            ["{{Param.Scene}}", "-f", "{{Task.Param.Frame}}"],
        )
        self.assertEqual(
            renderOpenJD["environments"],
            [{"name": "Blender", "variables": {"BLENDER_SCALE": "{{Param.Scale}}"}}],
        )
        self.assertIsNone(renderOpenJD["chunks"])
        self.assertEqual(encodeOpenJD["environments"], [])

        self.assertEqual(
            await self.taskParameters(api, job["id"]),
            [
                {"Frame": {"type": "INT", "value": "1"}},
                {"Frame": {"type": "INT", "value": "2"}},
                {"Frame": {"type": "INT", "value": "3"}},
                {},
            ],
        )
        page = await api.ok("GET", f"/api/v1/jobs/{job['id']}/tasks")
        self.assertEqual(
            [(t["layer"], t["frames"], t["parameters"]) for t in page["items"]],
            [
                ("render", [1], {"Frame": {"type": "INT", "value": "1"}}),
                ("render", [2], {"Frame": {"type": "INT", "value": "2"}}),
                ("render", [3], {"Frame": {"type": "INT", "value": "3"}}),
                ("encode", [], {}),
            ],
        )
        task = await api.ok("GET", page["items"][0]["href"])
        self.assertEqual(task["parameters"], {"Frame": {"type": "INT", "value": "1"}})
        self.assertIsNone(task["command"])

    async def test_jsonText(self) -> None:
        """
        The template may be JSON text too; a job field such as project and
        metadata goes with it.
        """
        api = await self.api()
        job = await self.submitOpenJD(
            api, json.dumps(template()), project="feature", metadata={"a": 1}
        )
        self.assertEqual((job["title"], job["project"]), ("a job", "feature"))
        self.assertEqual(job["metadata"], {"a": 1})
        self.assertEqual(await self.taskParameters(api, job["id"]), [{}])

    async def test_nativeTasksHaveNoParameters(self) -> None:
        api = await self.api()
        job = await api.submit()
        page = await api.ok("GET", f"/api/v1/jobs/{job['id']}/tasks")
        self.assertEqual({t["parameters"] is None for t in page["items"]}, {True})
        rows = await api.pool.query("SELECT openjd FROM jobs UNION ALL SELECT openjd FROM layers")
        self.assertEqual({r[0] for r in rows}, {None})

    async def test_combinations(self) -> None:
        """
        Products, associations, ranges and lists: one task per combination,
        in the specification's order (row-major, the right-most fastest).
        """
        api = await self.api()
        tpl = template(
            step(
                "product",
                parameterSpace=space(
                    {"name": "A", "type": "INT", "range": [3, 1]},
                    {"name": "B", "type": "STRING", "range": ["x", "y"]},
                    combination="A * B",
                ),
            ),
            step(
                "assoc",
                parameterSpace=space(
                    {"name": "A", "type": "INT", "range": "1-3"},
                    {"name": "B", "type": "INT", "range": "1-2"},
                    {"name": "C", "type": "FLOAT", "range": [10, 11.5]},
                    combination="A * (B, C)",
                ),
            ),
            step(
                "default",
                parameterSpace=space(
                    {"name": "F", "type": "INT", "range": "10-14:2"},
                    {"name": "P", "type": "PATH", "range": ["/a", "/b"]},
                ),
            ),
        )
        job = await self.submitOpenJD(api, tpl)
        product = await self.taskParameters(api, job["id"], "product")
        self.assertEqual(
            [values(p) for p in product],
            [
                {"A": "3", "B": "x"},
                {"A": "3", "B": "y"},
                {"A": "1", "B": "x"},
                {"A": "1", "B": "y"},
            ],
        )
        self.assertEqual(product[0]["B"]["type"], "STRING")
        assoc = await self.taskParameters(api, job["id"], "assoc")
        self.assertEqual(
            [values(p) for p in assoc],
            [
                {"A": "1", "B": "1", "C": "10"},
                {"A": "1", "B": "2", "C": "11.5"},
                {"A": "2", "B": "1", "C": "10"},
                {"A": "2", "B": "2", "C": "11.5"},
                {"A": "3", "B": "1", "C": "10"},
                {"A": "3", "B": "2", "C": "11.5"},
            ],
        )
        default = await self.taskParameters(api, job["id"], "default")
        self.assertEqual(
            [values(p) for p in default],
            [
                {"F": "10", "P": "/a"},
                {"F": "10", "P": "/b"},
                {"F": "12", "P": "/a"},
                {"F": "12", "P": "/b"},
                {"F": "14", "P": "/a"},
                {"F": "14", "P": "/b"},
            ],
        )
        # Frames: only where the space has exactly one INT parameter.
        rows = await api.pool.query(
            "SELECT l.name, t.frames FROM tasks t JOIN layers l ON l.id = t.layer_id"
            " WHERE t.job_id = %s ORDER BY t.index",
            (job["id"],),
        )
        frames: dict[str, list[list[int]]] = {}
        for name, taskFrames in rows:
            frames.setdefault(name, []).append(taskFrames)
        self.assertEqual(frames["product"], [[3], [3], [1], [1]])
        self.assertEqual(frames["default"], [[10], [10], [12], [12], [14], [14]])
        self.assertEqual(frames["assoc"], [[]] * 6)

    async def test_stepDependencies(self) -> None:
        """
        Step dependencies are whole-layer dependencies: a diamond's last
        step waits for both of its parents.
        """
        api = await self.api()
        tpl = template(
            step("a"),
            step("b", dependencies=[{"dependsOn": "a"}]),
            step("c", dependencies=[{"dependsOn": "a"}]),
            step("d", dependencies=[{"dependsOn": "b"}, {"dependsOn": "c"}]),
        )
        job = await self.submitOpenJD(api, tpl)
        layers = {layer["name"]: layer for layer in job["layers"]}
        self.assertEqual(layers["a"]["tasks"]["queued"], 1)
        self.assertEqual([d["layer"] for d in layers["d"]["depends_on"]], ["b", "c"])
        for name in "bcd":
            self.assertEqual(layers[name]["tasks"]["waiting"], 1)
        tasks = await api.pool.query(
            "SELECT id FROM tasks WHERE job_id = %s ORDER BY index", (job["id"],)
        )
        # Doing a releases b and c, not d.
        [a] = await api.pool.transaction(lambda txn: lifecycle.assign(txn, AGENT, [tasks[0][0]]))
        await api.pool.transaction(lambda txn: lifecycle.done(txn, AGENT, a.task_id, a.attempt))
        states = await api.pool.query(
            "SELECT state FROM tasks WHERE job_id = %s ORDER BY index", (job["id"],)
        )
        self.assertEqual([s[0] for s in states], ["done", "queued", "queued", "waiting"])

    async def test_chunking(self) -> None:
        """
        CHUNK[INT] (the task-chunking extension): one task per chunk of
        defaultTaskCount values as openjd-model divides them, contiguous or
        not; the chunk's value its range expression, its frames its values.
        """
        api = await self.api()
        tpl = template(
            step(
                "contiguous",
                parameterSpace=space(
                    {
                        "name": "Frame",
                        "type": "CHUNK[INT]",
                        "range": "1-10",
                        "chunks": {
                            "defaultTaskCount": 4,
                            "targetRuntimeSeconds": 120,
                            "rangeConstraint": "CONTIGUOUS",
                        },
                    },
                    {"name": "Pass", "type": "STRING", "range": ["beauty", "depth"]},
                    combination="Pass * Frame",
                ),
            ),
            step(
                "sparse",
                parameterSpace=space(
                    {
                        "name": "Frame",
                        "type": "CHUNK[INT]",
                        "range": [1, 2, 3, 7, 8, 20],
                        "chunks": {"defaultTaskCount": 3, "rangeConstraint": "NONCONTIGUOUS"},
                    }
                ),
            ),
            extensions=["TASK_CHUNKING"],
        )
        job = await self.submitOpenJD(api, tpl)
        contiguous = await self.taskParameters(api, job["id"], "contiguous")
        self.assertEqual(
            [values(p) for p in contiguous],
            [
                {"Pass": "beauty", "Frame": "1-4"},
                {"Pass": "beauty", "Frame": "5-7"},
                {"Pass": "beauty", "Frame": "8-10"},
                {"Pass": "depth", "Frame": "1-4"},
                {"Pass": "depth", "Frame": "5-7"},
                {"Pass": "depth", "Frame": "8-10"},
            ],
        )
        self.assertEqual(contiguous[0]["Frame"]["type"], "CHUNK[INT]")
        sparse = await self.taskParameters(api, job["id"], "sparse")
        self.assertEqual([values(p) for p in sparse], [{"Frame": "1-3"}, {"Frame": "7,8,20"}])
        rows = await api.pool.query(
            "SELECT l.name, l.chunk, l.openjd -> 'chunks', t.frames FROM tasks t"
            " JOIN layers l ON l.id = t.layer_id WHERE t.job_id = %s ORDER BY t.index",
            (job["id"],),
        )
        self.assertEqual(
            rows[0][1:],
            (
                4,
                {
                    "parameter": "Frame",
                    "default_count": 4,
                    "target_runtime_s": 120,
                    "contiguous": True,
                    "adaptive": True,
                },
                [1, 2, 3, 4],
            ),
        )
        self.assertEqual(rows[-1][1:], (3, {"parameter": "Frame", "default_count": 3,
                                            "target_runtime_s": None, "contiguous": False,
                                            "adaptive": False},
                                        [7, 8, 20]))  # fmt: skip
        [(stored,)] = await api.pool.query("SELECT openjd FROM jobs WHERE id = %s", (job["id"],))
        self.assertEqual(stored["extensions"], ["TASK_CHUNKING"])

    async def test_jobFields(self) -> None:
        """
        The job's requirements (tags, say) stay beneath what the template
        asks for; its env, limits and timeouts apply to every layer.
        """
        api = await self.api()
        tpl = template(
            step(
                "gpu",
                hostRequirements={
                    "amounts": [
                        {"name": "amount.worker.gpu", "min": 1},
                        {"name": "amount.worker.gpu.memory", "min": 8000},
                    ]
                },
            )
        )
        job = await self.submitOpenJD(
            api,
            tpl,
            requirements={"tags": ["studio"], "cpus": 2},
            env={"LICENSE": "1"},
            task_timeout_s=60,
            paused=True,
        )
        [layer] = job["layers"]
        self.assertEqual(layer["requirements"]["tags"], ["studio"])
        self.assertEqual((layer["requirements"]["cpus"], layer["requirements"]["gpus"]), (2, 1))
        self.assertEqual(layer["requirements"]["gpu_memory_mb"], 8000)
        self.assertEqual((layer["env"], layer["timeout_s"]), ({"LICENSE": "1"}, 60))
        self.assertEqual(job["state"], "paused")


class AssignTests(Base):
    async def test_payloadRoundTrips(self) -> None:
        """
        The assign message of an OpenJD task carries its job, step and
        parameters; every object parses back with openjd-model.
        """
        api = await self.api()
        job = await self.submitOpenJD(api, TEMPLATE_YAML, {"Shot": "sh010"})
        native = await api.submit(frames="1")
        rows = await api.pool.query(
            "SELECT id FROM tasks WHERE state = 'queued' ORDER BY job_id, index"
        )
        assignments = await api.pool.transaction(
            lambda txn: lifecycle.assign(txn, AGENT, [r[0] for r in rows])
        )
        byJob = {a.job_id: a for a in reversed(assignments)}
        first = byJob[job["id"]]
        self.assertIsNone(byJob[native["id"]].openjd)
        wire = msgspec.json.decode(msgspec.json.encode(first.message()))
        again = msgspec.json.decode(msgspec.json.encode(wire), type=AssignedTask)
        self.assertEqual(again.openjd, first.openjd)
        self.assertEqual(wire["command"], [])
        self.assertEqual(wire["layer"], "render")
        self.assertEqual(wire["frames"], [1])
        payload = wire["openjd"]
        self.assertEqual(
            set(payload["job"]), {"id", "name", "parameters", "environments", "extensions"}
        )
        self.assertEqual(payload["job"]["id"], job["id"])
        self.assertEqual(payload["job"]["name"], "sh010 v1")
        self.assertEqual(payload["job"]["parameters"]["Version"], {"type": "INT", "value": "1"})
        self.assertEqual(payload["step"]["name"], "render")
        self.assertEqual(payload["parameters"], {"Frame": {"type": "INT", "value": "1"}})

        script = parse_model(model=StepScript, obj=payload["step"]["script"])
        self.assertEqual(script.actions.onRun.command, "blender")
        [farm] = [parse_model(model=Environment, obj=e) for e in payload["job"]["environments"]]
        self.assertEqual(farm.name, "Farm")
        self.assertIsNotNone(farm.script)
        [blender] = [parse_model(model=Environment, obj=e) for e in payload["step"]["environments"]]
        self.assertEqual(blender.variables, {"BLENDER_SCALE": "{{Param.Scale}}"})
        parameters = {
            name: ParameterValue(type=ParameterValueType(v["type"]), value=v["value"])
            for name, v in payload["parameters"].items()
        }
        self.assertEqual(parameters["Frame"].type, ParameterValueType.INT)
        # A native task's message says nothing of OpenJD.
        nativeWire = msgspec.json.decode(msgspec.json.encode(byJob[native["id"]].message()))
        self.assertIsNone(nativeWire.get("openjd"))


#: (parameters, field named, words of openjd-model's message)
BAD_PARAMETERS: list[tuple[dict[str, Any], str, str]] = [
    ({}, "openjd.parameters.Shot", "Values missing for required job parameters: Shot"),
    ({"Shot": "sh030"}, "openjd.parameters.Shot", "not in allowedValues"),
    ({"Shot": "sh010", "Version": 100}, "openjd.parameters.Version", "must be at most 99"),
    ({"Shot": "sh010", "Version": 0}, "openjd.parameters.Version", "must be at least 1"),
    ({"Shot": "sh010", "Version": "seven"}, "openjd.parameters.Version", "integer"),
    ({"Shot": "sh010", "Version": 2.5}, "openjd.parameters.Version", "integer"),
    ({"Shot": "sh010", "Scale": "x"}, "openjd.parameters.Scale", "floating point"),
    ({"Shot": "sh010", "Scale": 9}, "openjd.parameters.Scale", "must be at most 4"),
    ({"Shot": "sh010", "Colour": "red"}, "openjd.parameters.Colour", "not defined in the template"),
    ({"Shot": "sh010", "Frames": "a-b"},
     "openjd.template.steps[0].parameterSpace.taskParameterDefinitions[0].range", "Unexpected"),
    ({"Shot": True}, "openjd.parameters.Shot", "must be a string or an integer or a number"),
]  # fmt: skip

#: (changes to a valid template, field named, words)
BAD_TEMPLATES: list[tuple[dict[str, Any], str, str]] = [
    ({"steps": []}, "openjd.template.steps", "at least 1 item"),
    ({"steps": [{"name": "", "script": SCRIPT}]}, "openjd.template.steps[0].name",
     "at least 1 character"),
    ({"steps": [{"name": "a", "script": SCRIPT, "bogus": 1}]}, "openjd.template.steps[0].bogus",
     "Extra inputs are not permitted"),
    ({"steps": [{"name": "a", "script": {"actions": {"onRun": {"command": 5}}}}]},
     "openjd.template.steps[0].script.actions.onRun.command", ""),
    ({"name": "{{Param.Nope}}"}, "openjd.template.name", "Variable Param.Nope does not exist"),
    ({"specificationVersion": "jobtemplate-2099"}, "openjd.template", "Unknown template version"),
    ({"extensions": ["EXPR"]}, "openjd.template.extensions", "Unsupported extension names: EXPR"),
    ({"steps": [step("a"), step("a")]}, "openjd.template.steps", "Duplicate values for name"),
    ({"steps": [step("a", dependencies=[{"dependsOn": "b"}])]},
     "openjd.template.steps[0].dependencies[0].dependsOn", ""),
    ({"steps": [step("a", dependencies=[{"dependsOn": "b"}]),
                step("b", dependencies=[{"dependsOn": "a"}])]}, "openjd.template", "cycle"),
    ({"steps": [step("a", parameterSpace=space(
        {"name": "A", "type": "INT", "range": "1-3"}, {"name": "B", "type": "INT", "range": [1]},
        combination="(A, B)"))]},
     "openjd.template.steps[0].parameterSpace.combination", "identical ranges"),
    ({"steps": [step("a", parameterSpace=space(
        {"name": "F", "type": "CHUNK[INT]", "range": "1-3", "chunks": {"defaultTaskCount": 1}}))]},
     "openjd.template.steps[0].parameterSpace.taskParameterDefinitions[0]", "TASK_CHUNKING"),
    ({"steps": [step("a", hostRequirements={"amounts": [
        {"name": "amount.worker.disk.scratch", "min": 1}]})]},
     "openjd.template.steps[0].hostRequirements.amounts[0].name", "not supported by masterd"),
]  # fmt: skip


class BadInputTests(Base):
    async def test_badParameters(self) -> None:
        """
        Each refused parameter value: a 400 with the model's message, naming
        the parameter; nothing written.
        """
        api = await self.api()
        for parameters, field, words in BAD_PARAMETERS:
            body = {"openjd": {"template": TEMPLATE_YAML, "parameters": parameters}}
            await self.refused(api, body, field, words)
        self.assertEqual(await api.count("jobs"), 0)
        self.assertEqual(await api.count("tasks"), 0)

    async def test_badTemplates(self) -> None:
        api = await self.api()
        for changes, field, words in BAD_TEMPLATES:
            tpl = template(**copy.deepcopy(changes))
            await self.refused(api, {"openjd": {"template": tpl}}, field, words)
        self.assertEqual(await api.count("jobs"), 0)
        self.assertEqual(await api.count("layers"), 0)

    async def test_nativeFieldsRefused(self) -> None:
        """
        What the template says cannot be said beside it.
        """
        api = await self.api()
        for changes in (
            {"command": ["x"]},
            {"frames": "1-3"},
            {"chunk": 2},
            {"layers": [{"name": "a", "command": ["x"], "frames": "1"}]},
            {"tasks": [{"frames": [1], "command": ["x"]}]},
            {"title": "mine"},
            {"cwd": "/tmp"},
        ):
            [field] = changes
            body = {"openjd": {"template": template()}, **changes}
            await self.refused(api, body, field, "cannot be given together with openjd")
        # Without openjd, a title is still required.
        await self.refused(api, {"command": ["x"], "frames": "1"}, "title", "is required")
        await self.refused(api, {"openjd": {}}, "openjd.template", "is required")
        self.assertEqual(await api.count("jobs"), 0)

    async def test_hostile(self) -> None:
        """
        YAML that expands (billion laughs), nests deeply, holds NUL or
        values JSON has not; a huge body; a range of two billion values:
        each a clean 4xx at once, with nothing written.
        """
        api = await self.api()
        laughs = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n"
            for i in range(9)
        )
        started = time.monotonic()
        cases: list[tuple[Any, str, str]] = [
            (laughs, "openjd.template", f"more than {MAX_NODES} values"),
            ("a: " + "[" * 50_000 + "]" * 50_000, "openjd.template", "not a valid YAML"),
            ("a: " + "{a: " * 10_000 + "1" + "}" * 10_000, "openjd.template", "not a valid YAML"),
            ('name: "x\\0y"', "openjd.template.name", "NUL"),
            ("name: x\x00y", "openjd.template", "NUL"),
            ("name: 2024-01-01\nsteps: []", "openjd.template.name", "a date"),
            ("name: !!binary aGVsbG8=", "openjd.template.name", "a bytes"),
            ("name: !!python/object/apply:os.system [ls]", "openjd.template", "not a valid YAML"),
            ("? [1, 2]\n: x", "openjd.template", "not a valid YAML"),
            ("just text", "openjd.template", "not a valid YAML"),
            ("{]", "openjd.template", "not a valid JSON"),
            ("name: .nan", "openjd.template.name", "finite"),
            ("name: " + "9" * 5000, "openjd.template", "not a valid YAML"),
            (DEEP, "openjd.template", ""),
        ]  # fmt: skip
        for tpl, field, words in cases:
            reply = await api.call("POST", "/api/v1/jobs", {"openjd": {"template": tpl}})
            self.assertIn(reply.code, (400, 422), (str(tpl)[:80], reply.body))
            error = reply.json()
            self.assertTrue(error["details"]["field"].startswith(field), (str(tpl)[:80], error))
            self.assertIn(words, error["message"], (str(tpl)[:80], error))
        # A body past limits.max_body_bytes is refused before it is read.
        big = "# " + "x" * (2 * 1024 * 1024) + "\n"
        reply = await api.call("POST", "/api/v1/jobs", {"openjd": {"template": big}})
        self.assertEqual(reply.code, 413)
        # A NUL escaped in the JSON body, in a parameter value.
        reply = await api.call(
            "POST",
            "/api/v1/jobs",
            raw=b'{"openjd": {"template": "x", "parameters": {"A": "a\\u0000"}}}',
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual(reply.code, 400, reply.body)
        self.assertEqual(reply.json()["details"]["field"], "openjd.parameters.A")
        # Two billion values: refused before a single task is made.
        huge = template(
            step("a", parameterSpace=space({"name": "F", "type": "INT", "range": "1-2000000000"}))
        )
        await self.refused(
            api, {"openjd": {"template": huge}}, "openjd.template.steps[0].parameterSpace",
            "more than 1000000", code=422,
        )  # fmt: skip
        chunked = template(
            step("a", parameterSpace=space({"name": "F", "type": "CHUNK[INT]",
                 "range": "1-2000000000", "chunks": {"defaultTaskCount": 1000000000,
                                                     "rangeConstraint": "CONTIGUOUS"}})),
            extensions=["TASK_CHUNKING"],
        )  # fmt: skip
        await self.refused(
            api, {"openjd": {"template": chunked}}, "openjd.template.steps[0].parameterSpace",
            "more than 1000000", code=422,
        )  # fmt: skip
        # A range to a parameter past 64 bits: too large even to count.
        beyond = {
            "specificationVersion": "jobtemplate-2023-09", "name": "x",
            "parameterDefinitions": [{"name": "N", "type": "INT"}],
            "steps": [{"name": "r", "parameterSpace": {"taskParameterDefinitions": [
                {"name": "F", "type": "INT", "range": "1-{{Param.N}}"}]},
                "script": {"actions": {"onRun": {"command": "true"}}}}],
        }  # fmt: skip
        for n in (2**63, 10**30):
            await self.refused(
                api, {"openjd": {"template": beyond, "parameters": {"N": n}}},
                "openjd.parameters", "too large to count", code=422,
            )  # fmt: skip
        self.assertLess(time.monotonic() - started, 30)
        self.assertEqual(await api.count("jobs"), 0)


#: An object template nested past what msgspec or the checks take.
DEEP: dict[str, Any] = {"name": "x"}
_node = DEEP
for _ in range(100):
    _node["a"] = {}
    _node = _node["a"]


class ScaleTests(Base):
    async def test_hundredThousandCombinations(self) -> None:
        """
        A step of 100,000 combinations is submitted within the native
        form's target (2 s), measured here end to end through the API.
        """
        api = await self.api()
        tpl = template(
            step("render", parameterSpace=space({"name": "Frame", "type": "INT",
                                                 "range": "1-100000"}))
        )  # fmt: skip
        body = {"openjd": {"template": tpl}}
        started = time.perf_counter()
        reply = await api.call("POST", "/api/v1/jobs", body)
        elapsed = time.perf_counter() - started
        self.assertEqual(reply.code, 201, reply.body)
        # For comparison, on the same machine: the spec alone, and the
        # native form of as many tasks.
        decoded = decode(json.dumps(body).encode(), JobSubmission)
        specStarted = time.perf_counter()
        jobSpec(decoded)
        specElapsed = time.perf_counter() - specStarted
        nativeStarted = time.perf_counter()
        await api.submit(frames="1-100000")
        nativeElapsed = time.perf_counter() - nativeStarted
        print(
            f"\n100,000 OpenJD tasks submitted in {elapsed:.2f} s (their spec {specElapsed:.2f} s);"
            f" native 100,000 tasks {nativeElapsed:.2f} s"
        )
        job = reply.json()
        self.assertEqual(job["tasks"]["total"], 100_000)
        rows = await api.pool.query(
            "SELECT min(index), max(index), min(frames[1]), max(frames[1]),"
            " count(parameters) FROM tasks WHERE job_id = %s",
            (job["id"],),
        )
        # No set stored: each is derived from the task's frame.
        self.assertEqual(rows, [(0, 99_999, 1, 100_000, 0)])
        [(last,)] = await api.pool.query(
            f"SELECT {TASK_PARAMETERS.format(t='t', l='l')} FROM tasks t"
            " WHERE t.job_id = %s AND t.index = 99999",
            (job["id"],),
        )
        self.assertEqual(last, {"Frame": {"type": "INT", "value": "100000"}})


def requirementsOf(obj: dict[str, Any]) -> dict[str, Any]:
    return hostRequirements(parse_model(model=HostRequirements, obj=obj), "here")


class HostRequirementsTests(SynchronousTestCase):
    """
    The mapping itself, a pure function.
    """

    def test_standardAmounts(self) -> None:
        self.assertEqual(
            requirementsOf(
                {
                    "amounts": [
                        {"name": "amount.worker.vcpu", "min": 2.5, "max": 8.5},
                        {"name": "Amount.Worker.Memory", "min": 1024, "max": 65536},
                        {"name": "amount.worker.gpu", "min": 1, "max": 2},
                        {"name": "amount.worker.gpu.memory", "min": 16000},
                    ]
                }
            ),
            {
                "cpus": 3,
                "max_cpus": 8,
                "ram_mb": 1024,
                "max_ram_mb": 65536,
                "gpus": 1,
                "max_gpus": 2,
                "gpu_memory_mb": 16000,
            },
        )

    def test_gpuMemoryNeedsAGpu(self) -> None:
        self.assertEqual(
            requirementsOf({"amounts": [{"name": "amount.worker.gpu.memory", "min": 8}]}),
            {"gpu_memory_mb": 8, "gpus": 1},
        )

    def test_maximumOnly(self) -> None:
        self.assertEqual(
            requirementsOf({"amounts": [{"name": "amount.worker.vcpu", "max": 1}]}),
            {"max_cpus": 1},
        )

    def test_osAndArch(self) -> None:
        self.assertEqual(
            requirementsOf(
                {
                    "attributes": [
                        {"name": "attr.worker.os.family", "anyOf": ["Linux", "macos"]},
                        {"name": "attr.worker.cpu.arch", "allOf": ["x86_64"]},
                    ]
                }
            ),
            {"os_family": ["linux", "macos"], "cpu_arch": ["x86_64"]},
        )

    def test_custom(self) -> None:
        self.assertEqual(
            requirementsOf(
                {
                    "attributes": [
                        {"name": "attr.custom.Renderer", "anyOf": ["Arnold", "karma"]},
                        {"name": "vendor:attr.pool", "allOf": ["a"], "anyOf": ["b", "c"]},
                    ],
                    "amounts": [
                        {"name": "amount.custom.licences", "min": 1},
                        {"name": "amount.custom.ratio", "min": 0.5, "max": 2.5},
                    ],
                }
            ),
            {
                "attributes": {
                    "attr.custom.renderer": {"any_of": ["arnold", "karma"]},
                    "vendor:attr.pool": {"any_of": ["b", "c"], "all_of": ["a"]},
                },
                "amounts": {
                    "amount.custom.licences": {"min": 1, "max": None},
                    "amount.custom.ratio": {"min": 0.5, "max": 2.5},
                },
            },
        )

    def test_none(self) -> None:
        self.assertEqual(hostRequirements(None, "here"), {})

    def test_refused(self) -> None:
        for obj, field, words in [
            ({"amounts": [{"name": "amount.worker.disk.scratch", "min": 10}]},
             "here.amounts[0].name", "not supported"),
            ({"amounts": [{"name": "amount.worker.gpu.memory", "max": 10}]},
             "here.amounts[0].max", "a maximum of amount.worker.gpu.memory"),
            ({"attributes": [{"name": "attr.worker.os.family", "anyOf": ["linux"],
                              "allOf": ["macos"]}]}, "here.attributes[0]", "both"),
        ]:  # fmt: skip
            with self.assertRaises(InvalidField) as caught:
                requirementsOf(obj)
            self.assertEqual(caught.exception.field, field, caught.exception)
            self.assertIn(words, caught.exception.message)


class ModelMessageTests(SynchronousTestCase):
    def test_paths(self) -> None:
        error = modelError(
            "2 validation errors for JobTemplate\nsteps[0] -> parameterSpace -> "
            "taskParameterDefinitions[1] -> CHUNK[INT] -> range:\n\tbad range\nname:\n\ttoo long"
        )
        self.assertEqual(
            error.field, "openjd.template.steps[0].parameterSpace.taskParameterDefinitions[1].range"
        )
        self.assertEqual(error.message, "bad range (and 1 more: openjd.template.name: too long)")
        self.assertEqual(
            modelError("1 validation errors for JobTemplate\nJobTemplate: a cycle").field,
            "openjd.template",
        )

    def test_aliasesAreCounted(self) -> None:
        with self.assertRaises(InvalidField):
            templateObject("a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + "\n".join(
                f"b{i}: &b{i} [{', '.join(['*a' if i == 0 else f'*b{i - 1}'] * 10)}]"
                for i in range(6)
            ))  # fmt: skip


class SingleIntTests(SynchronousTestCase):
    """
    A space of one INT parameter is made without the iterator: the same
    tasks as the iterator's, in its order.
    """

    def test_sameAsTheIterator(self) -> None:
        from openjd.model import StepParameterSpaceIterator, create_job, decode_job_template

        from masterd.openjd._mapping import stepOpenJD, taskParameters

        for rng, combination in [("1-10", None), ("10-1:-1", None), ("1-20:3", None),
                                 ("-5--1", None), ([3, 1, 2], None), (["3", "1"], None),
                                 ("1-5,8,10-12", None), ("1-4", "Frame"), ("7", None),
                                 ("{{Param.R}}", None), ("12,1-3", None)]:  # fmt: skip
            space: dict[str, Any] = {
                "taskParameterDefinitions": [{"name": "Frame", "type": "INT", "range": rng}]
            }
            if combination:
                space["combination"] = combination
            template = {
                "specificationVersion": "jobtemplate-2023-09", "name": "x",
                "parameterDefinitions": [{"name": "R", "type": "STRING", "default": "2-4"}],
                "steps": [{"name": "r", "parameterSpace": space,
                           "script": {"actions": {"onRun": {"command": "true"}}}}],
            }  # fmt: skip
            job = create_job(
                job_template=decode_job_template(template=template), job_parameter_values={}
            )
            step = job.steps[0]
            expected = [
                ({"Frame": {"type": "INT", "value": p["Frame"].value}}, (int(p["Frame"].value),))
                for p in StepParameterSpaceIterator(space=step.parameterSpace)
            ]
            frameParameter = stepOpenJD(step)["frame_parameter"]
            made = [
                (json.loads(text) if text is not None
                 else {frameParameter: {"type": "INT", "value": str(frames[0])}}, frames)
                for text, frames in taskParameters(step, "f", 10**6, 10**6)
            ]  # fmt: skip
            self.assertEqual(made, expected, rng)
