"""
Property tests over the schemas, against the real HTTP application and a
real database: every submission generated valid is accepted and reads back
equal (from its GET, the jobs list and its tasks); every submission made
invalid at one field is refused with a 4xx naming that field, and nothing is
written. Talkback messages generated valid decode and encode back equal.

hypothesis runs in a thread: each example makes blocking calls into the
reactor, which keeps serving the application meanwhile.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from masterd.schema import MAX_SAFE_INTEGER
from masterd.talkback.messages import encode, parseMessage

from ._api import API, Reply, startAPI

#: Derandomized: the same examples every run, so that CI is reproducible.
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- valid submissions ------------------------------------------------------------------

#: Text PostgreSQL keeps: no NUL, no lone surrogates.
text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
visible = st.characters(exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc"))
title = st.tuples(text, visible, text).map("".join)
literal = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00{}"), max_size=20
)
placeholder = st.sampled_from(
    ["{frame}", "{frame:04d}", "{start}", "{end:>6}", "{frames}", "{frames:<12}", "{{", "}}"]
)
argument = st.lists(st.one_of(literal, placeholder), max_size=4).map("".join)
command = st.lists(argument, min_size=1, max_size=5)
envName = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00="), min_size=1, max_size=20
)
tag = st.tuples(text, visible).map("".join)
number = st.one_of(
    st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
    st.floats(-1e15, 1e15, allow_nan=False, allow_infinity=False),
)
freeJSON = st.recursive(
    st.none() | st.booleans() | number | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)


@st.composite
def frameSpec(draw: Any) -> tuple[str | list[int], list[int]]:
    """
    A frame spec and the frames it names, in order: ascending items so that
    no frame repeats.
    """
    if draw(st.booleans()):
        frames = draw(st.lists(st.integers(-1000, 1000), min_size=1, max_size=30, unique=True))
        return frames, frames
    items: list[str] = []
    frames = []
    at = draw(st.integers(-1000, 1000))
    for _ in range(draw(st.integers(1, 4))):
        start = at + draw(st.integers(0, 10))
        length = draw(st.integers(0, 10))
        step = draw(st.integers(1, 3))
        if length == 0:
            items.append(str(start))
            frames.append(start)
        else:
            end = start + length
            items.append(f"{start}-{end}" + (f"x{step}" if step > 1 else ""))
            frames.extend(range(start, end + 1, step))
        at = frames[-1] + 1
    return ",".join(items), frames


@st.composite
def submission(draw: Any) -> tuple[dict[str, Any], list[int]]:
    spec, frames = draw(frameSpec())
    body: dict[str, Any] = {"title": draw(title), "command": draw(command), "frames": spec}
    optional: dict[str, Any] = {
        "chunk": st.integers(1, 5),
        "env": st.dictionaries(envName, text, max_size=4),
        "cwd": st.tuples(text, visible).map("".join),
        "priority": st.integers(0, 100),
        "weight": st.integers(1, 1000),
        "max_retries": st.integers(0, 100),
        "task_timeout_s": st.none() | st.integers(1, 30 * 24 * 3600),
        "paused": st.booleans(),
        "metadata": st.dictionaries(text, freeJSON, max_size=5),
        "requirements": st.fixed_dictionaries(
            {},
            optional={
                "cpus": st.integers(0, 4096),
                "ram_mb": st.integers(0, 2**31 - 1),
                "gpus": st.integers(0, 256),
                "tags": st.lists(tag, max_size=5),
            },
        ),
    }
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        body[name] = draw(optional[name])
    return body, frames


# -- one field made invalid ----------------------------------------------------------

Fault = tuple[str, Callable[[dict[str, Any]], None], str, int]


def setField(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def inject(body: dict[str, Any]) -> None:
        target: Any = body
        for key in path[:-1]:
            if isinstance(key, str) and key not in target:
                target[key] = {}
            target = target[key]
        target[path[-1]] = value

    return inject


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


FAULTS: list[Fault] = [
    ("NUL in the title", setField("title", value="a\x00b"), "title", 400),
    ("lone surrogate in the title", setField("title", value="a\ud800"), "title", 400),
    ("blank title", setField("title", value=" \t"), "title", 400),
    ("long title", setField("title", value="x" * 501), "title", 400),
    ("priority beyond 64 bits", setField("priority", value=2**64 + 1), "priority", 400),
    ("priority out of range", setField("priority", value=101), "priority", 400),
    ("fractional priority", setField("priority", value=1.5), "priority", 400),
    ("string weight", setField("weight", value="5"), "weight", 400),
    ("unknown field", setField("colour", value="red"), "colour", 400),
    ("NUL in a command argument", setField("command", 0, value="\x00"), "command[0]", 400),
    ("unknown placeholder", setField("command", 0, value="{frme}"), "command[0]", 400),
    ("huge width", setField("command", 0, value="{frame:200000000}"), "command[0]", 400),
    ("env name with =", setField("env", value={"A=B": "1"}), 'env["A=B"]', 400),
    ("NUL in an env value", setField("env", value={"A": "\x00"}), "env.A", 400),
    ("negative cpus", setField("requirements", "cpus", value=-1), "requirements.cpus", 400),
    ("blank tag", setField("requirements", "tags", value=[" "]), "requirements.tags[0]", 400),
    ("metadata beyond 2^53", setField("metadata", "n", value=2**53), "metadata.n", 400),
    ("metadata beyond 2^63", setField("metadata", "n", value=2**63), "metadata.n", 400),
    ("NUL in metadata", setField("metadata", "s", value=["\x00"]), "metadata.s[0]", 400),
    ("metadata too deep", setField("metadata", "d", value=nested(40)), "metadata.d" + ".k" * 30,
     422),
    ("frames run backwards", setField("frames", value="5-1"), "frames", 422),
    ("frames not a spec", setField("frames", value="1-"), "frames", 400),
    ("a frame twice", setField("frames", value=[1, 1]), "frames", 400),
    ("depends_on beyond bigint", setField("depends_on", value=[2**63]), "depends_on[0]", 400),
]  # fmt: skip


# -- reading back ---------------------------------------------------------------------


def expectedDocument(body: dict[str, Any]) -> dict[str, Any]:
    """
    What the job's document must say of what was submitted.
    """
    requirements: dict[str, Any] = {
        "cpus": 0, "ram_mb": 0, "gpus": 0, "gpu_memory_mb": 0, "tags": [], "max_cpus": None,
        "max_ram_mb": None, "max_gpus": None, "os_family": [], "cpu_arch": [], "attributes": {},
        "amounts": {},
    }  # fmt: skip
    requirements.update(body.get("requirements", {}))
    requirements["tags"] = sorted(set(requirements["tags"]))
    return {
        "title": body["title"],
        "command": body["command"],
        "env": body.get("env", {}),
        "cwd": body.get("cwd"),
        "priority": body.get("priority", 50),
        "weight": body.get("weight", 1),
        "max_retries": body.get("max_retries", 3),
        "task_timeout_s": body.get("task_timeout_s"),
        "paused": body.get("paused", False),
        "metadata": body.get("metadata", {}),
        "requirements": requirements,
    }


def shown(document: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    found = {key: document[key] for key in expected}
    found["requirements"] = dict(found["requirements"], tags=sorted(found["requirements"]["tags"]))
    return found


def sameJSON(a: Any, b: Any) -> bool:
    """
    Equal as JSON values (jsonb keeps numbers as numerics: 1.0 reads back 1).
    """
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(sameJSON(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(sameJSON(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-15, abs_tol=0)
    return bool(a == b)


class SubmissionProperties(TestCase):
    timeout = 600

    async def setUp(self) -> None:
        self.api: API = await startAPI(self)

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Reply:
        """
        From hypothesis's thread: a request, answered by the reactor's.
        """

        def request() -> Deferred[Reply]:
            return Deferred.fromCoroutine(self.api.call(method, path, body, raw=raw))

        result: Reply = blockingCallFromThread(reactor, request)
        return result

    def count(self, table: str) -> int:
        def counting() -> Deferred[int]:
            return Deferred.fromCoroutine(self.api.count(table))

        result: int = blockingCallFromThread(reactor, counting)
        return result

    def tasksOf(self, href: str) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        path: str | None = f"{href}/tasks?limit=500"
        while path:
            page = self.call("GET", path).json()
            tasks.extend(page["items"])
            path = page.get("next")
        return tasks

    async def test_validReadsBack(self) -> None:
        @PROPERTY
        @given(submission())
        def check(case: tuple[dict[str, Any], list[int]]) -> None:
            body, frames = case
            reply = self.call("POST", "/api/v1/jobs", body)
            self.assertEqual(reply.code, 201, (body, reply.body[:500]))
            created = reply.json()
            expected = expectedDocument(body)
            for document in (
                created,
                self.call("GET", created["href"]).json(),
                # The list, from just above this job: it is the first.
                self.call("GET", f"/api/v1/jobs?limit=1&after={created['id'] + 1}").json()["items"][
                    0
                ],
            ):
                self.assertEqual(document["id"], created["id"])
                found = shown(document, expected)
                self.assertTrue(sameJSON(found, expected), (found, expected))
            tasks = self.tasksOf(created["href"])
            self.assertEqual([f for task in tasks for f in task["frames"]], frames)
            chunk = body.get("chunk", 1)
            self.assertTrue(all(len(task["frames"]) <= chunk for task in tasks))

        await deferToThread(check)

    async def test_invalidRefused(self) -> None:
        @PROPERTY
        @given(submission(), st.sampled_from(FAULTS))
        def check(case: tuple[dict[str, Any], list[int]], fault: Fault) -> None:
            body, _ = case
            what, inject, field, status = fault
            inject(body)
            before = self.count("jobs"), self.count("tasks")
            raw = json.dumps(body).encode("utf-8", "surrogatepass")
            reply = self.call("POST", "/api/v1/jobs", raw=raw)
            self.assertEqual(reply.code, status, (what, reply.body[:500]))
            error = reply.json()
            self.assertEqual(error["error"], "invalid_field", (what, error))
            self.assertEqual(error["details"]["field"], field, (what, error))
            self.assertEqual((self.count("jobs"), self.count("tasks")), before, what)

        await deferToThread(check)


# -- talkback -------------------------------------------------------------------------

taskID = st.integers(1, 2**63 - 1)
attempt = st.integers(1, 2**31 - 1)
inbound = st.one_of(
    st.fixed_dictionaries({"type": st.just("heartbeat")}, optional={"usage": st.fixed_dictionaries(
        {}, optional={"cpu_percent": st.floats(0, 1000, allow_nan=False),
                      "ram_used_mb": st.integers(0, 2**31 - 1),
                      "disk_free_mb": st.integers(0, 2**31 - 1)})}),
    st.fixed_dictionaries({"type": st.just("task_update"), "task_id": taskID, "attempt": attempt,
                           "state": st.sampled_from(["running", "done", "failed", "rejected"])},
                          optional={"progress": st.floats(0, 1), "message": text,
                                    "exit_code": st.integers(-(2**31), 2**31 - 1)}),
    st.fixed_dictionaries({"type": st.just("log"), "task_id": taskID, "attempt": attempt,
                           "lines": st.lists(text, max_size=5)}),
    st.fixed_dictionaries({"type": st.just("limits")},
                          optional={"max_tasks": st.integers(1, 10_000),
                                    "max_cpus": st.integers(1, 100_000)}),
)  # fmt: skip


class MessageProperties(SynchronousTestCase):
    @PROPERTY
    @given(inbound)
    def test_roundTrip(self, message: dict[str, Any]) -> None:
        """
        A valid message decodes, and encodes back to what was sent (with the
        defaults it left out filled in).
        """
        decoded = parseMessage(json.dumps(message))
        again = json.loads(encode(decoded))
        for key, value in message.items():
            if isinstance(value, dict):
                for inner, item in value.items():
                    self.assertEqual(again[key][inner], item, message)
            else:
                self.assertEqual(again[key], value, message)

    @PROPERTY
    @given(inbound, st.sampled_from(["\x00", "\ud800", 2**64]))
    def test_badFieldNamed(self, message: dict[str, Any], bad: Any) -> None:
        """
        A message with one field spoiled is refused naming that field.
        """
        from masterd.errors import InvalidField

        field = next((k for k in message if k != "type" and not isinstance(message[k], dict)),
                     None)  # fmt: skip
        if field is None:
            return
        message[field] = bad
        raw = json.dumps(message)
        with self.assertRaises(InvalidField) as caught:
            parseMessage(raw)
        self.assertTrue(caught.exception.field.startswith(field), (message, caught.exception))
