"""
Layers and their dependencies, against a real database: whole layers,
frame by frame (chunks of different sizes), jobs frame by frame, failures
that cancel or wait, retries that bring dependents back, re-renders that
release nothing twice, and the submissions refused with the field named.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from masterd.jobs import lifecycle

from ._api import API, startAPI
from .test_jobs_api import AGENT

SIM_RENDER_COMP: dict[str, Any] = {
    "title": "shot 010",
    "layers": [
        {"name": "sim", "command": ["sim", "{start}", "{end}"], "frames": "1-6", "chunk": 6},
        {"name": "render", "command": ["render", "{frame}"], "frames": "1-6", "chunk": 3,
         "depends_on": [{"layer": "sim", "mode": "layer"}]},
        {"name": "comp", "command": ["comp", "{frame}"], "frames": "1-6", "chunk": 2,
         "depends_on": [{"layer": "render", "mode": "frame"}]},
    ],
}  # fmt: skip


class Base(TestCase):
    timeout = 60

    async def submit(self, api: API, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await api.ok("POST", "/api/v1/jobs", body, 201)
        return result

    async def tasks(self, api: API, jobID: int, layer: str | None = None) -> list[dict[str, Any]]:
        path = f"/api/v1/jobs/{jobID}/tasks?limit=500"
        if layer is not None:
            path += f"&layer={layer}"
        items: list[dict[str, Any]] = (await api.ok("GET", path))["items"]
        return items

    async def states(self, api: API, jobID: int, layer: str) -> list[str]:
        return [t["state"] for t in await self.tasks(api, jobID, layer)]

    async def render(self, api: API, taskID: int, ok: bool = True) -> None:
        [a] = await api.pool.transaction(lambda txn: lifecycle.assign(txn, AGENT, [taskID]))
        if ok:
            outcome = await api.pool.transaction(
                lambda txn: lifecycle.done(txn, AGENT, a.task_id, a.attempt)
            )
        else:
            outcome = await api.pool.transaction(
                lambda txn: lifecycle.failed(txn, AGENT, a.task_id, a.attempt, 1, "boom")
            )
        self.assertIs(outcome, lifecycle.Outcome.applied)


class LayerTests(Base):
    async def test_document(self) -> None:
        api = await startAPI(self)
        job = await self.submit(api, SIM_RENDER_COMP)
        self.assertEqual([layer["name"] for layer in job["layers"]], ["sim", "render", "comp"])
        self.assertEqual([layer["tasks"]["total"] for layer in job["layers"]], [1, 2, 3])
        self.assertEqual(job["tasks"]["total"], 6)
        self.assertEqual([layer["state"] for layer in job["layers"]],
                         ["queued", "waiting", "waiting"])  # fmt: skip
        render = job["layers"][1]
        self.assertEqual(
            render["depends_on"],
            [{"mode": "layer", "on_failure": "wait", "layer": "sim", "job": None,
              "satisfied": False}],
        )  # fmt: skip
        self.assertEqual(job["layers"][2]["depends_on"][0]["mode"], "frame")
        self.assertEqual(render["tasks"]["href"], f"{job['href']}/tasks?layer=render")
        comp = await self.tasks(api, job["id"], "comp")
        self.assertEqual([t["frames"] for t in comp], [[1, 2], [3, 4], [5, 6]])
        self.assertEqual({t["layer"] for t in comp}, {"comp"})

    async def test_oneCommandIsMain(self) -> None:
        api = await startAPI(self)
        job = await api.submit(frames="1-4", chunk=2)
        [main] = job["layers"]
        self.assertEqual((main["name"], main["frames"], main["chunk"]), ("main", "1-4", 2))
        self.assertEqual(main["tasks"]["total"], 2)
        self.assertEqual(job["project"], job["owner"])

    async def test_frameByFrame(self) -> None:
        """
        comp's task for frames F is released when every render task covering
        F is done, not before, while other render tasks still wait.
        """
        api = await startAPI(self)
        job = await self.submit(api, SIM_RENDER_COMP)
        [sim] = await self.tasks(api, job["id"], "sim")
        await self.render(api, sim["id"])
        self.assertEqual(await self.states(api, job["id"], "render"), ["queued", "queued"])
        render = await self.tasks(api, job["id"], "render")
        await self.render(api, render[0]["id"])  # frames 1-3
        # comp 1-2 is covered by render 1-3; comp 3-4 also needs render 4-6.
        self.assertEqual(await self.states(api, job["id"], "comp"),
                         ["queued", "waiting", "waiting"])  # fmt: skip
        await self.render(api, render[1]["id"])
        self.assertEqual(await self.states(api, job["id"], "comp"), ["queued"] * 3)
        document = await api.ok("GET", job["href"])
        self.assertEqual([layer["state"] for layer in document["layers"]],
                         ["done", "done", "queued"])  # fmt: skip
        self.assertTrue(document["layers"][1]["depends_on"][0]["satisfied"])

    async def test_cancelOnFailure(self) -> None:
        api = await startAPI(self)
        body = {
            "title": "t", "max_retries": 0,
            "layers": [
                {"name": "a", "command": ["a"], "frames": "1-2"},
                {"name": "b", "command": ["b"], "frames": "1-2",
                 "depends_on": [{"layer": "a", "mode": "frame", "on_failure": "cancel"}]},
                {"name": "c", "command": ["c"], "frames": "1-2",
                 "depends_on": [{"layer": "b", "on_failure": "cancel"}]},
            ],
        }  # fmt: skip
        job = await self.submit(api, body)
        a = await self.tasks(api, job["id"], "a")
        await self.render(api, a[0]["id"], ok=False)
        self.assertEqual(await self.states(api, job["id"], "b"), ["canceled", "waiting"])
        # b has a canceled task now: c (whole, cancel) is canceled too.
        self.assertEqual(await self.states(api, job["id"], "c"), ["canceled", "canceled"])
        await api.ok("POST", f"/api/v1/tasks/{a[0]['id']}/retry")
        self.assertEqual(await self.states(api, job["id"], "b"), ["waiting", "waiting"])
        self.assertEqual(await self.states(api, job["id"], "c"), ["waiting", "waiting"])
        a = await self.tasks(api, job["id"], "a")
        await self.render(api, a[0]["id"])
        self.assertEqual(await self.states(api, job["id"], "b"), ["queued", "waiting"])

    async def test_waitOnFailure(self) -> None:
        api = await startAPI(self)
        body = {"title": "t", "max_retries": 0, "layers": [
            {"name": "a", "command": ["a"], "frames": "1"},
            {"name": "b", "command": ["b"], "frames": "1", "depends_on": ["a"]},
        ]}  # fmt: skip
        job = await self.submit(api, body)
        [a] = await self.tasks(api, job["id"], "a")
        await self.render(api, a["id"], ok=False)
        self.assertEqual(await self.states(api, job["id"], "b"), ["waiting"])
        document = await api.ok("GET", job["href"])
        self.assertEqual(document["state"], "waiting")

    async def test_reRenderReleasesNothingTwice(self) -> None:
        api = await startAPI(self)
        body = {"title": "t", "layers": [
            {"name": "a", "command": ["a"], "frames": "1"},
            {"name": "b", "command": ["b"], "frames": "1-2", "depends_on": ["a"]},
        ]}  # fmt: skip
        job = await self.submit(api, body)
        [a] = await self.tasks(api, job["id"], "a")
        await self.render(api, a["id"])
        b = await self.tasks(api, job["id"], "b")
        await self.render(api, b[0]["id"])
        reply = await api.call("POST", f"/api/v1/tasks/{a['id']}/retry")
        self.assertEqual(reply.code, 409)
        self.assertIn('"done": true', reply.json()["message"])
        await api.ok("POST", f"/api/v1/tasks/{a['id']}/retry", {"done": True})
        self.assertEqual(await self.states(api, job["id"], "a"), ["queued"])
        self.assertEqual(await self.states(api, job["id"], "b"), ["done", "queued"])
        await self.render(api, a["id"])
        self.assertEqual(await self.states(api, job["id"], "b"), ["done", "queued"])
        [[blockers]] = await api.pool.query(
            "SELECT blockers FROM layers WHERE job_id = %s AND name = 'b'", (job["id"],)
        )
        self.assertEqual(blockers, 0)


class JobDependencyTests(Base):
    async def test_jobFrameByFrame(self) -> None:
        api = await startAPI(self)
        parent = await api.submit(frames="1-4", chunk=2)
        child = await api.submit(frames="1-4", depends_on=[{"job": parent["id"], "mode": "frame"}])
        self.assertEqual(await self.states(api, child["id"], "main"), ["waiting"] * 4)
        first = (await self.tasks(api, parent["id"]))[0]
        await self.render(api, first["id"])
        self.assertEqual(await self.states(api, child["id"], "main"),
                         ["queued", "queued", "waiting", "waiting"])  # fmt: skip
        # A job submitted later against the same parent sees what is done.
        late = await api.submit(frames="1-4", depends_on=[{"job": parent["id"], "mode": "frame"}])
        self.assertEqual(await self.states(api, late["id"], "main"),
                         ["queued", "queued", "waiting", "waiting"])  # fmt: skip

    async def test_wholeJob(self) -> None:
        api = await startAPI(self)
        parent = await api.submit(frames="1")
        child = await api.submit(frames="1-2", depends_on=[parent["id"]])
        self.assertEqual(child["parents"], [{"id": parent["id"], "href": parent["href"]}])
        self.assertEqual(await self.states(api, child["id"], "main"), ["waiting"] * 2)
        [task] = await self.tasks(api, parent["id"])
        await self.render(api, task["id"])
        self.assertEqual(await self.states(api, child["id"], "main"), ["queued"] * 2)

    async def test_deletedParentReleases(self) -> None:
        api = await startAPI(self)
        parent = await api.submit(frames="1-2")
        child = await api.submit(frames="1-2", depends_on=[{"job": parent["id"], "mode": "frame"}])
        await api.ok("POST", f"{parent['href']}/cancel")
        await api.ok("DELETE", parent["href"], status=204)
        self.assertEqual(await self.states(api, child["id"], "main"), ["queued"] * 2)


class RefusalTests(Base):
    async def refused(self, body: dict[str, Any], field: str, code: int = 400) -> str:
        api = await startAPI(self)
        reply = await api.call("POST", "/api/v1/jobs", body)
        self.assertEqual(reply.code, code, reply.body)
        error = reply.json()
        self.assertEqual(error["details"]["field"], field, error)
        [[count]] = await api.pool.query("SELECT count(*) FROM jobs")
        self.assertEqual(count, 0)
        message: str = error["message"]
        return message

    def layers(self, *layers: dict[str, Any]) -> dict[str, Any]:
        return {"title": "t", "layers": [
            {"command": ["x"], "frames": "1-4", **layer} for layer in layers
        ]}  # fmt: skip

    async def test_cycle(self) -> None:
        message = await self.refused(
            self.layers({"name": "a", "depends_on": ["c"]}, {"name": "b", "depends_on": ["a"]},
                        {"name": "c", "depends_on": ["b"]}),
            "layers[1].depends_on[0].layer",
            422,
        )  # fmt: skip
        self.assertIn("cycle", message)

    async def test_unknownLayer(self) -> None:
        await self.refused(
            self.layers({"name": "a", "depends_on": [{"layer": "nope"}]}),
            "layers[0].depends_on[0].layer",
            422,
        )

    async def test_unknownJob(self) -> None:
        await self.refused(
            self.layers({"name": "a", "depends_on": [{"job": 99999, "mode": "frame"}]}),
            "layers[0].depends_on[0]",
            404,
        )

    async def test_noCommonFrames(self) -> None:
        await self.refused(
            self.layers({"name": "a", "frames": "1-4"},
                        {"name": "b", "frames": "5-8", "depends_on": [
                            {"layer": "a", "mode": "frame"}]}),
            "layers[1].depends_on[0].mode",
            422,
        )  # fmt: skip

    async def test_duplicateName(self) -> None:
        await self.refused(self.layers({"name": "a"}, {"name": "a"}), "layers[1].name", 422)

    async def test_layersWithCommand(self) -> None:
        body = self.layers({"name": "a"})
        body["command"] = ["x"]
        await self.refused(body, "command")

    async def test_unknownLimit(self) -> None:
        await self.refused(self.layers({"name": "a", "limits": ["nuke"]}),
                           "layers[0].limits[0]", 422)  # fmt: skip

    async def test_badMode(self) -> None:
        await self.refused(
            self.layers({"name": "a"}, {"name": "b", "depends_on": [{"layer": "a",
                                                                     "mode": "job"}]}),
            "layers[1].depends_on[0].mode",
        )  # fmt: skip

    async def test_gpuMemoryWithoutGpus(self) -> None:
        await self.refused(
            {"title": "t", "command": ["x"], "frames": "1",
             "requirements": {"gpu_memory_mb": 8000}},
            "requirements.gpu_memory_mb",
            422,
        )  # fmt: skip
        await self.refused(
            self.layers({"name": "a", "requirements": {"gpu_memory_mb": 1}}),
            "layers[0].requirements.gpu_memory_mb",
            422,
        )


class NameTests(Base):
    async def test_namesInThePath(self) -> None:
        """
        A limit or project PUT under a name that cannot be one (one a job
        could never name) is a 400 naming the field; reading or deleting
        one is a 404. Nothing is created.
        """
        api = await startAPI(self)
        for path in ["/api/v1/limits/a%20b", "/api/v1/limits/" + "n" * 65,
                     "/api/v1/limits/.hidden", "/api/v1/projects/%20lead",
                     "/api/v1/limits/nuke%0A"]:  # fmt: skip
            body = {"max": 2} if "limits" in path else {"weight": 2}
            reply = await api.call("PUT", path, body)
            self.assertEqual(reply.code, 400, (path, reply.body))
            error = reply.json()
            self.assertEqual(error["details"]["field"], "name", error)
            self.assertIn("cannot be a", error["message"])
            for method in ("GET", "DELETE"):
                reply = await api.call(method, path)
                self.assertEqual(reply.code, 404, (method, path, reply.body))
        self.assertEqual(await api.count("limits"), 0)
        self.assertEqual(await api.count("projects"), 0)
        await api.ok("PUT", "/api/v1/limits/nuke-13.x", {"max": 2}, 201)
        await api.ok("PUT", "/api/v1/projects/shot%20010", {"weight": 2}, 201)
        await api.ok("GET", "/api/v1/projects/shot%20010")


class PatchTests(Base):
    async def test_gpuMemoryWithoutGpus(self) -> None:
        """
        A PATCH that would leave a layer asking for GPU memory without GPUs
        is refused as at submission (422 naming the field), and changes
        nothing; with GPUs it is taken.
        """
        api = await startAPI(self)
        job = await self.submit(api, {"title": "t", "command": ["x"], "frames": "1-2"})
        path = f"/api/v1/jobs/{job['id']}"
        reply = await api.call("PATCH", path, {"requirements": {"gpu_memory_mb": 8000}})
        self.assertEqual(reply.code, 422, reply.body)
        self.assertEqual(reply.json()["details"]["field"], "requirements.gpu_memory_mb")
        document = await api.ok("GET", path)
        self.assertEqual(document["requirements"]["gpu_memory_mb"], 0)
        self.assertEqual(document["layers"][0]["requirements"]["gpu_memory_mb"], 0)
        body = {"requirements": {"gpus": 1, "gpu_memory_mb": 8000}}
        document = await api.ok("PATCH", path, body)
        self.assertEqual(document["layers"][0]["requirements"]["gpu_memory_mb"], 8000)
        reply = await api.call("PATCH", path, {"requirements": {"gpus": 0}})
        self.assertEqual(reply.code, 422, reply.body)
