"""
Jobs and tasks over HTTP, against a real database.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from masterd.events import WorkAvailable
from masterd.jobs import lifecycle

from ._api import API, startAPI

AGENT = "6f1c0b9e-52a5-4d36-9a8f-0d1c2b3a4e5f"
OTHER = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"


class Base(TestCase):
    timeout = 60

    async def api(self, **kw: Any) -> API:
        return await startAPI(self, **kw)


async def assignAll(api: API, jobID: int, agent: str = AGENT) -> list[lifecycle.Assignment]:
    rows = await api.pool.query(
        "SELECT id FROM tasks WHERE job_id = %s AND state = 'queued' ORDER BY index", (jobID,)
    )
    return await api.pool.transaction(
        lambda txn: lifecycle.assign(txn, agent, [r[0] for r in rows])
    )


async def finish(api: API, a: lifecycle.Assignment, agent: str = AGENT) -> None:
    outcome = await api.pool.transaction(
        lambda txn: lifecycle.done(txn, agent, a.task_id, a.attempt)
    )
    assert outcome is lifecycle.Outcome.applied, outcome


class SubmitTests(Base):
    async def test_framesAndChunks(self) -> None:
        api = await self.api()
        published: list[Any] = []
        api.jobs._events.subscribe(WorkAvailable, published.append)
        reply = await api.call(
            "POST",
            "/api/v1/jobs",
            {
                "title": "shot 10",
                "command": ["render", "-s", "{start}", "-e", "{end}", "--frames={frames}"],
                "frames": "1-10x2,20,30-31",
                "chunk": 2,
                "priority": 70,
                "requirements": {"cpus": 4, "ram_mb": 8000, "tags": ["linux", "maya"]},
                "env": {"A": "b"},
                "cwd": "/work",
                "metadata": {"shot": 10},
            },
        )
        self.assertEqual(reply.code, 201, reply.body)
        job = reply.json()
        self.assertEqual(reply.header("location"), f"/api/v1/jobs/{job['id']}")
        self.assertEqual(job["href"], f"/api/v1/jobs/{job['id']}")
        self.assertEqual(job["title"], "shot 10")
        self.assertEqual(job["owner"], "admin")
        self.assertEqual(job["state"], "queued")
        self.assertEqual(job["priority"], 70)
        self.assertEqual(job["paused"], False)
        self.assertEqual(job["progress"], 0.0)
        self.assertTrue(job["created_at"].endswith("Z"))
        self.assertIsNone(job["finished_at"])
        self.assertEqual(
            job["requirements"],
            {"cpus": 4, "ram_mb": 8000, "gpus": 0, "gpu_memory_mb": 0, "tags": ["linux", "maya"],
             "max_cpus": None, "max_ram_mb": None, "max_gpus": None, "os_family": [],
             "cpu_arch": [], "attributes": {}, "amounts": {}},
        )  # fmt: skip
        self.assertEqual(
            job["tasks"],
            {
                "href": f"/api/v1/jobs/{job['id']}/tasks",
                "total": 4,
                "waiting": 0,
                "queued": 4,
                "assigned": 0,
                "running": 0,
                "done": 0,
                "failed": 0,
                "canceled": 0,
            },
        )
        self.assertEqual((job["parents"], job["children"]), ([], []))
        self.assertEqual(published, [WorkAvailable((job["id"],))])

        tasks = await api.ok("GET", job["tasks"]["href"])
        self.assertEqual(
            [(t["index"], t["frames"]) for t in tasks["items"]],
            [(0, [1, 3]), (1, [5, 7]), (2, [9, 20]), (3, [30, 31])],
        )
        task = tasks["items"][1]
        self.assertEqual(task["job"], {"id": job["id"], "href": job["href"]})
        self.assertEqual(task["state"], "queued")
        self.assertEqual((task["attempt"], task["agent"]), (0, None))
        self.assertEqual(task["attempts"], f"/api/v1/tasks/{task['id']}/attempts")
        self.assertEqual(await api.ok("GET", task["href"]), task)

        # Placeholders are expanded when the task is handed out.
        [first, second, *_] = await assignAll(api, job["id"])
        self.assertEqual(second.command, ["render", "-s", "5", "-e", "7", "--frames=5,7"])
        self.assertEqual((second.env, second.cwd), ({"A": "b"}, "/work"))
        self.assertEqual(first.frames, [1, 3])

    async def test_explicitTasks(self) -> None:
        api = await self.api()
        job = await api.submit(
            command=None,
            frames=None,
            tasks=[
                {"frames": [5], "command": ["a", "{frame:04d}"]},
                {"frames": "6-8", "command": ["b", "{start}-{end}"]},
            ],
        )
        self.assertEqual(job["tasks"]["total"], 2)
        assignments = await assignAll(api, job["id"])
        self.assertEqual([a.command for a in assignments], [["a", "0005"], ["b", "6-8"]])

    async def test_hundredThousandTasks(self) -> None:
        api = await self.api()
        job = await api.submit(frames="1-100000")
        self.assertEqual(job["tasks"]["total"], 100_000)
        self.assertEqual(job["tasks"]["queued"], 100_000)
        rows = await api.pool.query(
            "SELECT min(index), max(index), min(frames[1]), max(frames[1]) FROM tasks"
        )
        self.assertEqual(rows, [(0, 99_999, 1, 100_000)])


BAD: list[tuple[dict[str, Any], str, str]] = [
    # (body changes, field named, words in the message)
    ({"title": None}, "title", "is required"),
    ({"title": "  "}, "title", "must not be blank"),
    ({"title": 7}, "title", "must be a string"),
    ({"command": None}, "command", "is required"),
    ({"command": "render"}, "command", "array of strings"),
    ({"command": []}, "command", "must not be empty"),
    ({"command": ["x", 3]}, "command[1]", "must be a string"),
    ({"command": ["x", "{frme}"]}, "command[1]", "unknown placeholder {frme}"),
    ({"command": ["x", "{"]}, "command[1]", "malformed placeholder"),
    ({"frames": None}, "frames", "is required"),
    ({"frames": ""}, "frames", "must not be empty"),
    ({"frames": "1-"}, "frames", "'1-' is not a frame"),
    ({"frames": "5-1"}, "frames", "runs backwards"),
    ({"frames": "a-b"}, "frames", "'a-b' is not a frame"),
    ({"frames": "1-10x0"}, "frames", "step of 0"),
    ({"frames": "1-5,3"}, "frames", "frame 3 appears more than once"),
    ({"frames": "1-2000000"}, "frames", "the limit is 1000000"),
    ({"frames": [1, "2"]}, "frames[1]", "must be an integer"),
    ({"frames": 5}, "frames", "must be a string or an array of integers"),
    ({"chunk": 0}, "chunk", "between 1 and"),
    ({"chunk": "2"}, "chunk", "must be an integer"),
    ({"priority": 101}, "priority", "between 0 and 100"),
    ({"priority": -1}, "priority", "between 0 and 100"),
    ({"priority": True}, "priority", "must be an integer"),
    ({"requirements": {"cpu": 2}}, "requirements.cpu", "not a known field; known: cpus"),
    ({"requirements": {"cpus": -1}}, "requirements.cpus", "between 0 and"),
    ({"requirements": {"tags": "linux"}}, "requirements.tags", "array of strings"),
    ({"requirements": []}, "requirements", "must be an object"),
    ({"env": {"A": 1}}, "env.A", "must be a string"),
    ({"env": ["A"]}, "env", "must be an object"),
    ({"cwd": 5}, "cwd", "must be a string"),
    ({"max_retries": -1}, "max_retries", "between 0 and"),
    ({"task_timeout_s": 0}, "task_timeout_s", "between 1 and"),
    ({"depends_on": ["x"]}, "depends_on[0]", "must be an integer"),
    ({"depends_on": 3}, "depends_on", "must be an array"),
    ({"paused": "yes"}, "paused", "must be true or false"),
    ({"metadata": [1]}, "metadata", "must be an object"),
    ({"colour": "red"}, "colour", "is not a known field"),
    ({"tasks": [], "frames": None}, "tasks", "must not be empty"),
    ({"tasks": [{"frames": [1]}], "chunk": 2, "frames": None}, "chunk", "together with tasks"),
    ({"tasks": [{"frames": [1], "cmd": []}], "frames": None}, "tasks[0].cmd", "not a known field"),
    ({"tasks": [{"frames": [1, 1]}], "frames": None}, "tasks[0].frames", "more than once"),
    ({"tasks": [{}], "frames": None}, "tasks[0].frames", "is required"),
    ({"tasks": [{"frames": [1]}], "frames": None, "command": None}, "tasks[0].command",
     "is required"),
]  # fmt: skip


#: Words of the refusals that fit the schema but not the master's rules:
#: 422, not 400 (the OpenAPI document could not have said so).
MEANING = ("runs backwards", "step of 0", "frame 3 appears more than once", "the limit is")


class BadInputTests(Base):
    async def test_everyBadField(self) -> None:
        """
        Each rejection is a 400 (422 for a rule the schema cannot state)
        naming the field, and writes nothing.
        """
        api = await self.api()
        for changes, field, words in BAD:
            expected = 422 if any(meaning in words for meaning in MEANING) else 400
            body: dict[str, Any] = {"title": "t", "command": ["r", "{frame}"], "frames": "1-3"}
            body.update(changes)
            body = {k: v for k, v in body.items() if v is not None}
            reply = await api.call("POST", "/api/v1/jobs", body)
            self.assertEqual(reply.code, expected, (changes, reply.body))
            error = reply.json()
            self.assertEqual(error["error"], "invalid_field", changes)
            self.assertEqual(error["details"]["field"], field, (changes, error))
            self.assertTrue(error["message"].startswith(f"{field}: "), error)
            self.assertIn(words, error["message"], changes)
        self.assertEqual(await api.count("jobs"), 0)
        self.assertEqual(await api.count("tasks"), 0)

    async def test_unknownParent(self) -> None:
        """
        A parent that does not exist: 404 naming the field, nothing written.
        """
        api = await self.api()
        body = {"title": "t", "command": ["r"], "frames": "1", "depends_on": [999999]}
        reply = await api.call("POST", "/api/v1/jobs", body)
        self.assertEqual(reply.code, 404)
        self.assertEqual(reply.json()["details"]["field"], "depends_on[0]")
        self.assertEqual(await api.count("jobs"), 0)

    async def test_notAnObject(self) -> None:
        api = await self.api()
        reply = await api.call("POST", "/api/v1/jobs", [1, 2])
        self.assertEqual(reply.code, 400)
        reply = await api.call("POST", "/api/v1/jobs", raw=b'{"title": ')
        self.assertEqual((reply.code, reply.json()["error"]), (400, "invalid_json"))

    async def test_dependsOnSelfImpossible(self) -> None:
        """
        A new job cannot name itself (it has no id yet); a dependency cycle
        cannot be made either, since parents must exist first.
        """
        api = await self.api()
        parent = await api.submit()
        reply = await api.call(
            "POST", "/api/v1/jobs", {"title": "c", "command": ["x"], "frames": "1",
                                     "depends_on": [parent["id"], parent["id"] + 1]}
        )  # fmt: skip
        self.assertEqual(reply.json()["details"]["field"], "depends_on[1]")
        self.assertEqual(await api.count("jobs"), 1)

    async def test_badQuery(self) -> None:
        api = await self.api()
        for path, field in [
            ("/api/v1/jobs?limit=0", "limit"),
            ("/api/v1/jobs?limit=x", "limit"),
            ("/api/v1/jobs?limit=501", "limit"),
            ("/api/v1/jobs?state=sleeping", "state"),
            ("/api/v1/jobs?after=-4", "after"),
            ("/api/v1/assignments?agent=nope", "agent"),
        ]:
            reply = await api.call("GET", path)
            self.assertEqual(reply.code, 400, path)
            self.assertEqual(reply.json()["details"]["field"], field, path)
        reply = await api.call("GET", "/api/v1/jobs/notanumber")
        self.assertEqual(reply.code, 404)
        reply = await api.call("GET", "/api/v1/jobs/99999999999999999999999")
        self.assertEqual(reply.code, 404)
        reply = await api.call("GET", "/api/v1/jobs/12345")
        self.assertEqual(
            (reply.code, reply.json()["details"]), (404, {"kind": "job", "id": "12345"})
        )


class ListTests(Base):
    async def test_pagination(self) -> None:
        api = await self.api()
        ids = [(await api.submit(title=f"j{i}"))["id"] for i in range(7)]
        page = await api.ok("GET", "/api/v1/jobs?limit=3")
        self.assertEqual([j["id"] for j in page["items"]], ids[::-1][:3])
        seen = [j["id"] for j in page["items"]]
        while page["next"]:
            self.assertIn("limit=3", page["next"])
            page = await api.ok("GET", page["next"])
            seen += [j["id"] for j in page["items"]]
        self.assertEqual(seen, ids[::-1])

    async def test_filters(self) -> None:
        api = await self.api()
        a = await api.submit(paused=True)
        b = await api.submit()
        page = await api.ok("GET", "/api/v1/jobs?state=paused")
        self.assertEqual([j["id"] for j in page["items"]], [a["id"]])
        page = await api.ok("GET", "/api/v1/jobs?state=queued&owner=admin")
        self.assertEqual([j["id"] for j in page["items"]], [b["id"]])
        page = await api.ok("GET", "/api/v1/jobs?owner=someone")
        self.assertEqual(page, {"items": [], "next": None, "total": 0})

    async def test_taskPages(self) -> None:
        api = await self.api()
        job = await api.submit(frames="1-7")
        page = await api.ok("GET", f"/api/v1/jobs/{job['id']}/tasks?limit=5")
        self.assertEqual([t["index"] for t in page["items"]], [0, 1, 2, 3, 4])
        page = await api.ok("GET", page["next"])
        self.assertEqual(([t["index"] for t in page["items"]], page["next"]), ([5, 6], None))
        page = await api.ok("GET", f"/api/v1/jobs/{job['id']}/tasks?state=done")
        self.assertEqual(page["items"], [])
        reply = await api.call("GET", "/api/v1/jobs/4242/tasks")
        self.assertEqual(reply.code, 404)


class RoleTests(Base):
    async def test_roles(self) -> None:
        api = await self.api()
        job = await api.submit()
        body = {"title": "t", "command": ["x"], "frames": "1"}
        self.assertEqual((await api.call("POST", "/api/v1/jobs", body, role="viewer")).code, 403)
        self.assertEqual((await api.call("POST", "/api/v1/jobs", body, role="agent")).code, 403)
        self.assertEqual((await api.call("POST", "/api/v1/jobs", body, role="")).code, 401)
        self.assertEqual((await api.call("POST", "/api/v1/jobs", body, role="operator")).code, 201)
        self.assertEqual((await api.call("GET", "/api/v1/jobs", role="viewer")).code, 200)
        self.assertEqual((await api.call("GET", "/api/v1/jobs", role="agent")).code, 403)
        for path in ("cancel", "retry"):
            reply = await api.call("POST", f"/api/v1/jobs/{job['id']}/{path}", role="viewer")
            self.assertEqual(reply.code, 403)
        reply = await api.call("PATCH", f"/api/v1/jobs/{job['id']}", {"priority": 1}, role="viewer")
        self.assertEqual(reply.code, 403)
        reply = await api.call("DELETE", f"/api/v1/jobs/{job['id']}", role="viewer")
        self.assertEqual(reply.code, 403)
