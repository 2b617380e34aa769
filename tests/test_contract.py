"""
The documents of the API (OpenAPI 3.1, AsyncAPI 3.0), and talkback messages
checked by the same declarations: what the master says of itself is what it
does.
"""

from __future__ import annotations

import json
from typing import Any

from openapi_spec_validator import validate
from twisted.trial.unittest import SynchronousTestCase

from masterd.errors import InvalidField
from masterd.http import MasterAPI
from masterd.http._operations import OPERATIONS
from masterd.talkback import messages
from masterd.talkback.messages import parseMessage

from . import test_http

AGENT = "7b0c6b2e-0d3c-4a59-9b4b-6a4a0b9d8e11"


class DocumentTests(SynchronousTestCase):
    def setUp(self) -> None:
        # The HTTP tests' in-memory master (imported as a module, so that
        # trial does not collect its tests twice).
        test_http.HTTPTests.setUp(self)  # type: ignore[arg-type]

    def test_openapi(self) -> None:
        """
        Served without a token, valid, and naming every route the
        application has, with its role.
        """
        reply = self.http.request("GET", "/api/v1/openapi.json")  # type: ignore[attr-defined]
        self.assertEqual(reply.code, 200)
        document = reply.json()
        validate(document)
        routes = {
            (method, rule.rule.replace("<", "{").replace(">", "}"))
            for rule in MasterAPI.app.url_map.iter_rules()
            for method in rule.methods or ()
            if method not in ("HEAD", "OPTIONS")
        }
        documented = {
            (method.upper(), path) for path, item in document["paths"].items() for method in item
        }
        self.assertEqual(routes, documented)
        for op in OPERATIONS:
            entry = document["paths"][op.path][op.method.lower()]
            if op.role is not None:
                self.assertEqual(entry["x-masterd-role"], op.role.value, op.path)
                self.assertIn("401", entry["responses"])
            self.assertIn("500", entry["responses"])
        job = document["paths"]["/api/v1/jobs"]["post"]
        self.assertEqual(
            job["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/JobSubmission",
        )

    def test_asyncapi(self) -> None:
        reply = self.http.request("GET", "/api/v1/asyncapi.json")  # type: ignore[attr-defined]
        self.assertEqual(reply.code, 200)
        document = reply.json()
        self.assertEqual(document["asyncapi"], "3.0.0")
        names = set(document["components"]["messages"])
        for kind in messages.TYPES:
            self.assertIn(kind, names)
        for out in ("welcome", "assign", "cancel", "ack", "limits", "error"):
            self.assertIn(f"{out}_out", names)
        ops = document["operations"]
        self.assertEqual(len(ops["fromAgent"]["messages"]), len(messages.INBOUND))
        self.assertEqual(len(ops["toAgent"]["messages"]), len(messages.OUTBOUND))
        for message in document["components"]["messages"].values():
            ref = message["payload"]["schema"]["$ref"].rsplit("/", 1)[1]
            self.assertIn(ref, document["components"]["schemas"])


#: (message, the field its error names)
BAD_MESSAGES: list[tuple[Any, str]] = [
    ({"type": "log", "task_id": 1, "attempt": 1, "lines": ["ok", "a\u0000b"]}, "lines[1]"),
    ({"type": "task_update", "task_id": 2**63, "attempt": 1, "state": "done"}, "task_id"),
    ({"type": "task_update", "task_id": 1, "attempt": 2**31, "state": "done"}, "attempt"),
    ({"type": "task_update", "task_id": 1, "attempt": 1, "state": "done",
      "exit_code": 2**40}, "exit_code"),
    ({"type": "task_update", "task_id": 1, "attempt": 1, "state": "lost"}, "state"),
    ({"type": "task_update", "task_id": 1, "attempt": 1, "state": "done",
      "message": "\u0000"}, "message"),
    ({"type": "heartbeat", "usage": {"cpu_percent": "hot"}}, "usage.cpu_percent"),
    ({"type": "heartbeat", "usage": {"io": {"disk_read_bytes": 2**64}}},
     "usage.io.disk_read_bytes"),
    ({"type": "heartbeat", "usage": {"io": {"nope": 1}}}, "usage.io.nope"),
    ({"type": "hello", "agent": {"id": AGENT, "hostname": "a\u0000"}}, "agent.hostname"),
    ({"type": "hello", "agent": {"id": "\u0661" * 8, "hostname": "a"}}, "agent.id"),
    ({"type": "hello", "agent": {"id": AGENT, "hostname": " "}}, "agent.hostname"),
    ({"type": "hello", "agent": {"id": AGENT, "hostname": "a", "software": {"x": 1}}},
     "agent.software.x"),
    ({"type": "hello", "agent": {"id": AGENT, "hostname": "a"},
      "running": [{"task_id": 2**70, "attempt": 1}]}, "running[0].task_id"),
    ({"type": "limits", "max_tasks": 2**63 + 1}, "max_tasks"),
    ({"type": "exception", "message": "x" * 20_000}, "message"),
    ({"type": "nope"}, "type"),
    ({"kind": "hello"}, "type"),
    ([1], "(message)"),
]  # fmt: skip


class MessageTests(SynchronousTestCase):
    def test_badMessages(self) -> None:
        for message, field in BAD_MESSAGES:
            with self.assertRaises(InvalidField, msg=message) as caught:
                parseMessage(json.dumps(message))
            self.assertEqual(caught.exception.field, field, (message, caught.exception))

    def test_notJSONOrTooDeep(self) -> None:
        for text in ('{"type": "log"', "NaN", "[" * 100_000 + "]" * 100_000):
            with self.assertRaises(InvalidField) as caught:
                parseMessage(text)
            self.assertEqual(caught.exception.field, "(message)", text[:40])

    def test_good(self) -> None:
        hello = parseMessage(json.dumps({"type": "hello", "agent": {
            "id": AGENT.upper(), "hostname": "n1", "tags": ["b", "a", "b"]}}))  # fmt: skip
        assert isinstance(hello, messages.Hello)
        self.assertEqual((hello.agent_id, hello.tags), (AGENT, ("a", "b")))
        self.assertEqual(
            messages.encode(messages.Cancel(task_id=1, attempt=2, reason="r")),
            '{"type":"cancel","task_id":1,"attempt":2,"reason":"r"}',
        )
