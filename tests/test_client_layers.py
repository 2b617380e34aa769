"""
The client library's layers, dependencies, limits and projects: the bodies
it sends and the documents it reads against a fake opener, then the same
against the master's real HTTP application over a real database.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from masterd.client import (
    Client,
    Dependency,
    Job,
    LayerSpec,
    MasterdError,
    Requirements,
    submission,
)
from masterd.jobs import lifecycle

from ._api import TOKENS, startAPI
from .test_client import BASE, FakeOpener, Reply, attemptDoc, jobDoc, page, taskDoc
from .test_jobs_api import AGENT


def layerDoc(name: str, index: int, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": name,
        "index": index,
        "state": "waiting",
        "command": [name, "{frame}"],
        "frames": "1-6",
        "chunk": 1,
        "env": {},
        "cwd": None,
        "requirements": {"cpus": 1, "ram_mb": 0, "gpus": 0, "tags": [], "gpu_memory_mb": 0},
        "limits": [],
        "max_running": None,
        "timeout_s": None,
        "stall_timeout_s": None,
        "depends_on": [],
        "tasks": {"href": f"/api/v1/jobs/42/tasks?layer={name}", "total": 6, "waiting": 6,
                  "queued": 0, "assigned": 0, "running": 0, "done": 0, "failed": 0,
                  "canceled": 0},
    }  # fmt: skip
    document.update(changes)
    return document


def layeredJobDoc() -> dict[str, Any]:
    return jobDoc(
        command=None,
        project="shot010",
        max_running=8,
        preemptible=True,
        limits=["houdini"],
        stall_timeout_s=600,
        layers=[
            layerDoc("sim", 0, state="done", chunk=6, limits=["houdini"]),
            layerDoc("render", 1, state="running",
                     depends_on=[{"mode": "layer", "on_failure": "wait", "layer": "sim",
                                  "job": None, "satisfied": True}]),
            layerDoc("comp", 2, limits=["houdini", "nuke"],
                     depends_on=[{"mode": "frame", "on_failure": "cancel", "layer": "render",
                                  "job": None, "satisfied": False},
                                 {"mode": "frame", "on_failure": "wait", "layer": None,
                                  "job": {"id": 12, "href": "/api/v1/jobs/12"},
                                  "satisfied": False}]),
        ],
    )  # fmt: skip


def limitDoc(name: str = "nuke", **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": name,
        "href": f"/api/v1/limits/{name}",
        "max": 20,
        "in_use": 3,
        "description": "Nuke render licences",
        "created_at": "2026-11-28T23:00:00.000Z",
        "updated_at": "2026-11-28T23:10:00.000Z",
    }
    document.update(changes)
    return document


def projectDoc(name: str = "shot010", **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": name,
        "href": f"/api/v1/projects/{name}",
        "weight": 3,
        "active": 12,
        "queued": 40,
        "jobs": f"/api/v1/jobs?project={name}",
        "created_at": "2026-11-28T23:00:00.000Z",
        "updated_at": "2026-11-28T23:00:00.000Z",
    }
    document.update(changes)
    return document


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = FakeOpener()
        self.client = Client(BASE, "tok", opener=self.opener)


class SubmitTests(Base):
    def test_layers(self) -> None:
        """
        Layers as L{LayerSpec}s or dicts, dependencies as names, ids, jobs,
        L{Dependency}s or dicts, and the job's new fields: sent as the API
        takes them, only what was given.
        """
        self.opener.on("POST", "/api/v1/jobs", Reply(layeredJobDoc(), 201))
        parent = Job(self.client._transport, jobDoc(41))
        job = self.client.submit(
            title="shot 010",
            project="shot010",
            limits=["houdini"],
            max_running=8,
            preemptible=True,
            stall_timeout_s=600,
            depends_on=[parent, Dependency(job=12, mode="frame")],
            layers=[
                LayerSpec("sim", command=["sim", "{start}", "{end}"], chunk=100,
                          requirements=Requirements(cpus=16, gpus=1, gpu_memory_mb=24000)),
                LayerSpec("render", command=["render", "{frame}"], depends_on=["sim"],
                          max_running=4, timeout_s=3600),
                {"name": "comp", "command": ["comp", "{frame}"], "limits": ["nuke"],
                 "depends_on": [Dependency(layer="render", mode="frame", on_failure="cancel"),
                                {"job": parent, "mode": "frame"}]},
            ],
        )  # fmt: skip
        [sent] = self.opener.sent
        self.assertEqual(
            sent.body,
            {
                "title": "shot 010",
                "project": "shot010",
                "limits": ["houdini"],
                "max_running": 8,
                "preemptible": True,
                "stall_timeout_s": 600,
                "depends_on": [41, {"job": 12, "mode": "frame"}],
                "layers": [
                    {"name": "sim", "command": ["sim", "{start}", "{end}"], "chunk": 100,
                     "requirements": {"cpus": 16, "ram_mb": 0, "gpus": 1, "tags": [],
                                      "gpu_memory_mb": 24000}},
                    {"name": "render", "command": ["render", "{frame}"], "depends_on": ["sim"],
                     "max_running": 4, "timeout_s": 3600},
                    {"name": "comp", "command": ["comp", "{frame}"], "limits": ["nuke"],
                     "depends_on": [{"layer": "render", "mode": "frame", "on_failure": "cancel"},
                                    {"job": 41, "mode": "frame"}]},
                ],
            },
        )  # fmt: skip
        self.assertEqual([layer.name for layer in job.layers], ["sim", "render", "comp"])

    def test_submissionAndBody(self) -> None:
        """
        C{submission} builds the same body; C{submit_body} sends one as it
        is, fields the client does not know included.
        """
        body = submission(title="t", layers=[LayerSpec("a", frames=[1, 2])], preemptible=False)
        self.assertEqual(
            body, {"title": "t", "layers": [{"name": "a", "frames": [1, 2]}], "preemptible": False}
        )
        self.opener.on("POST", "/api/v1/jobs", Reply(jobDoc(), 201))
        self.client.submit_body({**body, "future_field": 1})
        self.assertEqual(self.opener.sent[0].body["future_field"], 1)

    def test_plainRequirementsUnchanged(self) -> None:
        """
        Without GPU memory, requirements are sent as before it existed.
        """
        self.assertEqual(Requirements(cpus=2).to_json(),
                         {"cpus": 2, "ram_mb": 0, "gpus": 0, "tags": []})  # fmt: skip

    def test_dependency(self) -> None:
        for bad in [{}, {"layer": "a", "job": 1}]:
            self.assertRaises(ValueError, Dependency, **bad)
        self.assertEqual(Dependency(layer="sim").to_json(), {"layer": "sim"})
        read = Dependency.from_json(
            {"mode": "frame", "on_failure": "wait", "layer": None,
             "job": {"id": 12, "href": "/api/v1/jobs/12"}, "satisfied": True}
        )  # fmt: skip
        self.assertEqual(read, Dependency(job=12, mode="frame", satisfied=True))
        self.assertTrue(read.frame_by_frame)
        self.assertEqual(read.to_json(), {"job": 12, "mode": "frame"})


class ReadTests(Base):
    def test_jobFields(self) -> None:
        job = Job(self.client._transport, layeredJobDoc())
        self.assertEqual(
            (job.project, job.max_running, job.preemptible, job.limits, job.stall_timeout_s),
            ("shot010", 8, True, ["houdini"], 600),
        )
        # A master from before layers sends none of it.
        old = Job(self.client._transport, jobDoc())
        self.assertEqual(
            (old.project, old.max_running, old.preemptible, old.limits, old.layers),
            ("", None, False, [], []),
        )

    def test_layers(self) -> None:
        job = Job(self.client._transport, layeredJobDoc())
        sim, render, comp = job.layers
        self.assertEqual((sim.name, sim.index, sim.state, sim.chunk), ("sim", 0, "done", 6))
        self.assertTrue(sim.is_finished)
        self.assertEqual(render.depends_on, [Dependency(layer="sim", mode="layer",
                                                        satisfied=True)])  # fmt: skip
        self.assertEqual(comp.limits, ["houdini", "nuke"])
        self.assertEqual(
            comp.depends_on,
            [Dependency(layer="render", mode="frame", on_failure="cancel"),
             Dependency(job=12, mode="frame")],
        )  # fmt: skip
        self.assertEqual((comp.task_counts.total, comp.progress), (6, 0.0))
        self.assertEqual((comp.frames, comp.command), ("1-6", ["comp", "{frame}"]))
        self.assertEqual(comp.requirements.cpus, 1)
        self.assertEqual(job.layer("render").name, "render")
        self.assertRaises(KeyError, job.layer, "encode")

    def test_tasksByLayer(self) -> None:
        job = Job(self.client._transport, layeredJobDoc())
        self.opener.on("GET", "/api/v1/jobs/42/tasks", page([taskDoc(layer="comp")]))
        [task] = job.tasks(layer="comp", state="queued")
        self.assertEqual(task.layer, "comp")
        self.assertEqual(self.opener.sent[-1].query, {"layer": "comp", "state": "queued"})
        [task] = job.layer("render").tasks(limit=10)
        self.assertEqual(self.opener.sent[-1].query, {"layer": "render", "limit": "10"})

    def test_taskLayerDefault(self) -> None:
        """
        A task of a master from before layers is in the one layer, main.
        """
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc())
        self.assertEqual(self.client.task(9001).layer, "main")

    def test_retryDone(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc(state="done"))
        self.opener.on("POST", "/api/v1/tasks/9001/retry", taskDoc(state="queued"))
        task = self.client.task(9001)
        self.assertEqual(task.retry(done=True).state, "queued")
        self.assertEqual(self.opener.sent[-1].body, {"done": True})
        task.retry()
        self.assertIsNone(self.opener.sent[-1].body)

    def test_attemptGpus(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc())
        self.opener.on(
            "GET",
            "/api/v1/tasks/9001/attempts",
            page([attemptDoc(1, state="preempted", gpu_devices=[0, 2]), attemptDoc(2)]),
        )
        first, second = self.client.task(9001).attempts()
        self.assertEqual((first.state, first.gpu_devices), ("preempted", [0, 2]))
        self.assertEqual(second.gpu_devices, [])

    def test_updateNewFields(self) -> None:
        self.opener.on("PATCH", "/api/v1/jobs/42", jobDoc())
        job = Job(self.client._transport, jobDoc())
        job.update(project="p", preemptible=False, max_running=3)
        self.assertEqual(self.opener.sent[-1].body,
                         {"project": "p", "preemptible": False, "max_running": 3})  # fmt: skip
        job.update(max_running=0)
        self.assertEqual(self.opener.sent[-1].body, {"max_running": None})

    def test_jobsByProject(self) -> None:
        self.opener.on("GET", "/api/v1/jobs", page([jobDoc()]))
        list(self.client.jobs(project="shot 10"))
        self.assertEqual(self.opener.sent[-1].query["project"], "shot 10")


class LimitTests(Base):
    def test_listAndShow(self) -> None:
        self.opener.on("GET", "/api/v1/limits", page([limitDoc(), limitDoc("houdini", max=2)]))
        self.opener.on("GET", "/api/v1/limits/nuke", limitDoc())
        nuke, houdini = self.client.limits()
        self.assertEqual((nuke.name, nuke.max, nuke.in_use, nuke.available), ("nuke", 20, 3, 17))
        self.assertEqual((houdini.max, houdini.available), (2, 0))
        self.assertEqual(nuke.created_at.year, 2026)  # type: ignore[union-attr]
        self.assertEqual(self.client.limit("nuke"), nuke)

    def test_setKeepsDescription(self) -> None:
        """
        Without a description, the current one is kept (the PUT replaces
        both); a new limit gets none.
        """
        self.opener.on("GET", "/api/v1/limits/nuke", limitDoc())
        self.opener.on("PUT", "/api/v1/limits/nuke", limitDoc(max=5))
        self.assertEqual(self.client.set_limit("nuke", 5).max, 5)
        self.assertEqual(
            self.opener.paths(), ["GET /api/v1/limits/nuke", "PUT /api/v1/limits/nuke"]
        )
        self.assertEqual(
            self.opener.sent[-1].body, {"max": 5, "description": "Nuke render licences"}
        )
        self.opener.on("PUT", "/api/v1/limits/arnold", Reply(limitDoc("arnold"), 201))
        self.client.set_limit("arnold", 10)
        self.assertEqual(self.opener.sent[-1].body, {"max": 10, "description": ""})
        self.client.set_limit("nuke", 7, description="")
        self.assertEqual(self.opener.sent[-1].path, "/api/v1/limits/nuke")
        self.assertEqual(self.opener.sent[-1].body, {"max": 7, "description": ""})

    def test_updateAndDelete(self) -> None:
        self.opener.on("GET", "/api/v1/limits/nuke", limitDoc())
        self.opener.on("PUT", "/api/v1/limits/nuke", limitDoc(max=1))
        self.opener.on("DELETE", "/api/v1/limits/nuke", Reply(status=204))
        nuke = self.client.limit("nuke")
        self.assertEqual(nuke.update(max=1).max, 1)
        self.assertEqual(
            self.opener.sent[-1].body, {"max": 1, "description": "Nuke render licences"}
        )
        nuke.delete()
        self.client.delete_limit("nuke")
        self.assertEqual(self.opener.paths()[-2:], ["DELETE /api/v1/limits/nuke"] * 2)

    def test_namesQuoted(self) -> None:
        self.assertRaises(MasterdError, self.client.limit, "../jobs")
        self.assertEqual(self.opener.sent[-1].url, f"{BASE}/api/v1/limits/..%2Fjobs")


class ProjectTests(Base):
    def test_roundTrip(self) -> None:
        self.opener.on("GET", "/api/v1/projects", page([projectDoc(), projectDoc("ops", weight=1,
                       created_at=None, updated_at=None)]))  # fmt: skip
        self.opener.on("PUT", "/api/v1/projects/shot%2010", projectDoc("shot 10", weight=5))
        self.opener.on("DELETE", "/api/v1/projects/shot%2010", Reply(status=204))
        self.opener.on("GET", "/api/v1/jobs", page([jobDoc()]))
        shot, ops = self.client.projects()
        self.assertEqual((shot.name, shot.weight, shot.active, shot.queued), ("shot010", 3, 12, 40))
        self.assertIsNone(ops.created_at)
        changed = self.client.set_project("shot 10", 5)
        self.assertEqual((changed.weight, changed.href), (5, "/api/v1/projects/shot%2010"))
        self.assertEqual(self.opener.sent[-1].body, {"weight": 5})
        self.assertEqual(len(list(shot.jobs(state="running"))), 1)
        self.assertEqual(self.opener.sent[-1].query,
                         {"project": "shot010", "state": "running", "limit": "50"})  # fmt: skip
        self.client.delete_project("shot 10")
        self.assertEqual(self.opener.paths()[-1], "DELETE /api/v1/projects/shot%2010")


class RealMasterTests(TestCase):
    """
    The client against the master's real HTTP application and database.
    """

    timeout = 60

    async def test_layersLimitsProjects(self) -> None:
        api = await startAPI(self)
        client = Client(api.base, TOKENS["operator"], timeout=10)

        def submit() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            nuke = client.set_limit("nuke", 2, description="Nuke licences")
            seen["limit"] = (nuke.max, nuke.in_use, nuke.description)
            seen["kept"] = client.set_limit("nuke", 4).description
            seen["weight"] = client.set_project("shot 010", 3).weight
            job = client.submit(
                title="shot 010",
                project="shot 010",
                max_running=4,
                preemptible=True,
                stall_timeout_s=300,
                layers=[
                    LayerSpec("sim", command=["sim", "{start}", "{end}"], frames="1-6", chunk=6),
                    LayerSpec("render", command=["render", "{frame}"], frames="1-6", chunk=3,
                              depends_on=["sim"]),
                    LayerSpec("comp", command=["comp", "{frame}"], frames="1-6", chunk=2,
                              limits=["nuke"],
                              depends_on=[Dependency(layer="render", mode="frame")]),
                ],
            )  # fmt: skip
            seen["job"] = job
            seen["tasks"] = {layer.name: [t.frames for t in layer.tasks()] for layer in job.layers}
            seen["byLayer"] = [t.layer for t in job.tasks(layer="comp")]
            seen["projects"] = {p.name: (p.weight, p.queued) for p in client.projects()}
            seen["projectJobs"] = [j.id for j in client.project("shot 010").jobs()]
            try:
                client.delete_limit("nuke")
            except MasterdError as e:
                seen["inUse"] = (e.status, e.code)
            return seen

        seen = await deferToThread(submit)
        job = seen["job"]
        self.assertEqual(seen["limit"], (2, 0, "Nuke licences"))
        self.assertEqual(seen["kept"], "Nuke licences")
        self.assertEqual(seen["weight"], 3)
        self.assertEqual(
            (job.project, job.max_running, job.preemptible, job.stall_timeout_s),
            ("shot 010", 4, True, 300),
        )
        self.assertEqual(
            [(la.name, la.state) for la in job.layers],
            [("sim", "queued"), ("render", "waiting"), ("comp", "waiting")],
        )
        self.assertEqual(job.layer("comp").limits, ["nuke"])
        self.assertEqual(job.layer("comp").depends_on, [Dependency(layer="render", mode="frame")])
        self.assertEqual(
            seen["tasks"],
            {"sim": [[1, 2, 3, 4, 5, 6]], "render": [[1, 2, 3], [4, 5, 6]],
             "comp": [[1, 2], [3, 4], [5, 6]]},
        )  # fmt: skip
        self.assertEqual(seen["byLayer"], ["comp"] * 3)
        self.assertEqual(seen["projects"]["shot 010"], (3, 1))
        self.assertEqual(seen["projectJobs"], [job.id])
        self.assertEqual(seen["inUse"], (409, "conflict"))

        # sim runs on an agent with GPU 1, and is done: render is released.
        simID = (await api.ok("GET", f"/api/v1/jobs/{job.id}/tasks?layer=sim"))["items"][0]["id"]
        [a] = await api.pool.transaction(
            lambda txn: lifecycle.assignMany(txn, [(simID, AGENT)], devices={simID: (1,)})
        )
        outcome = await api.pool.transaction(
            lambda txn: lifecycle.done(txn, AGENT, a.task_id, a.attempt)
        )
        self.assertIs(outcome, lifecycle.Outcome.applied)

        def rerender() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            task = client.task(simID)
            seen["done"] = (task.state, task.layer, [a.gpu_devices for a in task.attempts()])
            seen["render"] = client.job(job.id).layer("render").state
            try:
                Client(api.base, TOKENS["viewer"]).task(simID).retry(done=True)
            except MasterdError as e:
                seen["viewer"] = e.status
            seen["retried"] = task.retry(done=True).state
            seen["layers"] = [la.state for la in client.job(job.id).layers]
            client.delete_project("shot 010")
            seen["default"] = client.project("shot 010").weight
            return seen

        seen = await deferToThread(rerender)
        self.assertEqual(seen["done"], ("done", "sim", [[1]]))
        self.assertEqual(seen["render"], "queued")
        self.assertEqual(seen["viewer"], 403)
        self.assertEqual(seen["retried"], "queued")
        # What the first done released stays released.
        self.assertEqual(seen["layers"], ["queued", "queued", "waiting"])
        self.assertEqual(seen["default"], 1)
