"""
Hellos in batches: many agents welcomed in one transaction (as after a
master died and its agents reconnect at once), their slots loaded together,
and the WebSocket upgrade answered without a second HTTP parser.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers

from masterd.db import Batcher
from masterd.http._upgrade import acceptToken, handshakeProblem
from masterd.jobs import lifecycle
from masterd.scheduler import loadSlots
from masterd.scheduler.service import loadSlotsMany
from masterd.talkback import messages as m
from masterd.talkback.store import AgentStore, Refused, Welcome

from ._api import API, startAPI
from .test_talkback import AGENT, OTHER, hello

THIRD = "3a1d2c4b-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


def parsed(agentID: str, **extra: Any) -> m.Hello:
    result = m.parseMessage(json.dumps(hello(agentID, **extra)), m.DEFAULT_LIMITS)
    assert isinstance(result, m.Hello)
    return result


class BatchedHelloTests(TestCase):
    timeout = 60

    async def setUpStore(self) -> tuple[API, AgentStore, Batcher]:
        api = await startAPI(self)
        batcher = Batcher(api.pool)
        return api, AgentStore(api.pool, batcher), batcher

    async def connectAll(
        self, store: AgentStore, hellos: list[tuple[m.Hello, str]], mayEnroll: bool = True
    ) -> list[Welcome]:
        """
        Hellos that all must be welcomed (with an agent token: each may
        enroll its id).
        """
        outcomes = await self.outcomes(store, hellos, mayEnroll)
        welcomes = [w for w in outcomes if isinstance(w, Welcome)]
        self.assertEqual(len(welcomes), len(outcomes), outcomes)
        return welcomes

    async def outcomes(
        self, store: AgentStore, hellos: list[tuple[m.Hello, str]], mayEnroll: bool = True
    ) -> list[Welcome | Refused]:
        pending: list[Deferred[Welcome | Refused]] = [
            Deferred.fromCoroutine(store.connect(h, "test", session, 1_000_000.0, mayEnroll))
            for h, session in hellos
        ]
        results = await DeferredList(pending, fireOnOneErrback=True, consumeErrors=True)
        return [outcome for _, outcome in results]

    async def test_oneTransaction(self) -> None:
        """
        Hellos that arrive together are written in one batch; each gets its
        own welcome, and each agent's row says its own session.
        """
        api, store, batcher = await self.setUpStore()
        sessions = [str(uuid.uuid4()) for _ in range(3)]
        welcomes = await self.connectAll(
            store, [(parsed(a), s) for a, s in zip((AGENT, OTHER, THIRD), sessions, strict=True)]
        )
        self.assertEqual(batcher.batches, 1)
        self.assertEqual([w.previous_session for w in welcomes], [None, None, None])
        self.assertEqual([w.enabled for w in welcomes], [True, True, True])
        rows = await api.pool.query(
            "SELECT id::text, session::text, hostname, tags, software, master FROM agents"
            " ORDER BY id"
        )
        self.assertEqual(
            sorted((r[0], r[1]) for r in rows),
            sorted(zip((AGENT, OTHER, THIRD), sessions, strict=True)),
        )
        byID = {r[0]: r for r in rows}
        self.assertEqual(byID[AGENT][2:], ("node-6f1c", ["gpu", "linux"], {"blender": "4.2"},
                                           "test"))  # fmt: skip

    async def test_sameAgentTwice(self) -> None:
        """
        Two hellos of one agent in one batch apply in order: the later one
        replaces the earlier, whose session it reports as the previous one.
        """
        api, store, batcher = await self.setUpStore()
        [enrolled] = await self.connectAll(store, [(parsed(AGENT), str(uuid.uuid4()))])
        assert enrolled.credential is not None
        await store.disconnect(AGENT, str(uuid.uuid4()), 1_000_000.0)
        await api.pool.query("UPDATE agents SET session = NULL, master = NULL")
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        again = parsed(AGENT, credential=enrolled.credential)
        batches = batcher.batches
        welcomes = await self.connectAll(store, [(again, first), (again, second)], False)
        self.assertEqual(batcher.batches - batches, 1)
        self.assertEqual(welcomes[0].previous_session, None)
        self.assertEqual(
            (welcomes[1].previous_master, welcomes[1].previous_session), ("test", first)
        )
        rows = await api.pool.query("SELECT session::text FROM agents WHERE id = %s", (AGENT,))
        self.assertEqual(rows, [(second,)])

    async def test_tasksSettledPerAgent(self) -> None:
        """
        In a batch, each agent's held tasks are settled against its own
        list: unlisted ones requeued as lost, listed ones kept, listed ones
        that are not its own to cancel.
        """
        api, store, _ = await self.setUpStore()
        mine, others = await self.connectAll(
            store, [(parsed(AGENT), str(uuid.uuid4())), (parsed(OTHER), str(uuid.uuid4()))]
        )
        job = await api.submit(frames="1-3")
        ids = [r[0] for r in await api.pool.query(
            "SELECT id FROM tasks WHERE job_id = %s ORDER BY index", (job["id"],))]  # fmt: skip
        a, b = await api.pool.transaction(lambda txn: lifecycle.assign(txn, AGENT, ids[:2]))
        [c] = await api.pool.transaction(lambda txn: lifecycle.assign(txn, OTHER, ids[2:]))
        running = [{"task_id": b.task_id, "attempt": b.attempt}]
        welcomes = await self.connectAll(
            store,
            [
                (parsed(AGENT, running=running, credential=mine.credential),
                 str(uuid.uuid4())),
                (parsed(OTHER, running=[{"task_id": c.task_id, "attempt": c.attempt},
                                        {"task_id": a.task_id, "attempt": a.attempt}],
                        credential=others.credential),
                 str(uuid.uuid4())),
            ],
        )  # fmt: skip
        self.assertEqual(welcomes[0].requeued, ((a.task_id, a.attempt),))
        self.assertEqual(welcomes[0].cancel, ())
        self.assertEqual(welcomes[1].requeued, ())
        self.assertEqual(welcomes[1].cancel, ((a.task_id, a.attempt),))
        states = dict(await api.pool.query("SELECT id, state FROM tasks WHERE id = ANY (%s)",
                                           (ids,)))  # fmt: skip
        self.assertEqual(
            states, {a.task_id: "queued", b.task_id: "assigned", c.task_id: "assigned"}
        )

    async def test_slotsLoadedTogether(self) -> None:
        """
        Several agents' slots load in one statement set, as each would alone.
        """
        api, store, _ = await self.setUpStore()
        await self.connectAll(store, [(parsed(AGENT), str(uuid.uuid4())),
                                      (parsed(OTHER), str(uuid.uuid4()))])  # fmt: skip
        job = await api.submit(frames="1")
        [task] = [r[0] for r in await api.pool.query(
            "SELECT id FROM tasks WHERE job_id = %s", (job["id"],))]  # fmt: skip
        await api.pool.transaction(lambda txn: lifecycle.assign(txn, OTHER, [task]))
        together = await api.pool.transaction(
            lambda txn: loadSlotsMany(txn, [AGENT, OTHER, THIRD, AGENT])
        )
        alone = [await api.pool.transaction(lambda txn, a=a: loadSlots(txn, a))
                 for a in (AGENT, OTHER, THIRD, AGENT)]  # fmt: skip
        self.assertEqual(together, alone)
        assert together[1] is not None
        self.assertEqual(list(together[1].running), [task])
        self.assertIsNone(together[2])


def _request(proto: bytes = b"HTTP/1.1", **headers: list[bytes]) -> Any:
    request = type("Request", (), {})()
    request.clientproto = proto
    request.requestHeaders = Headers(
        {name.replace("_", "-").encode(): values for name, values in headers.items()}
    )
    return request


GOOD = {
    "upgrade": [b"websocket"],
    "connection": [b"keep-alive, Upgrade"],
    "sec_websocket_version": [b"13"],
    "sec_websocket_key": [b"dGhlIHNhbXBsZSBub25jZQ=="],
}


class HandshakeTests(SynchronousTestCase):
    def test_acceptToken(self) -> None:
        """
        The accept token is RFC 6455's (its section 1.3 example).
        """
        self.assertEqual(acceptToken(b"dGhlIHNhbXBsZSBub25jZQ=="), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")

    def test_valid(self) -> None:
        self.assertIsNone(handshakeProblem(_request(**GOOD)))
        self.assertIsNone(handshakeProblem(_request(**{**GOOD, "upgrade": [b"WebSocket"]})))

    def test_problems(self) -> None:
        """
        Each way a handshake can be wrong is named.
        """
        for change, problem in [
            ({"upgrade": [b"h2c"]}, "Upgrade: websocket"),
            ({"connection": [b"keep-alive"]}, "Connection: Upgrade"),
            ({"sec_websocket_version": [b"8"]}, "Sec-WebSocket-Version: 13"),
            ({"sec_websocket_version": [b"13, 8"]}, "Sec-WebSocket-Version: 13"),
            ({"sec_websocket_key": []}, "one Sec-WebSocket-Key"),
            ({"sec_websocket_key": [b"a", b"b"]}, "one Sec-WebSocket-Key"),
            ({"sec_websocket_key": [b"not base64!"]}, "16 bytes"),
            ({"sec_websocket_key": [b"c2hvcnQ="]}, "16 bytes"),
        ]:
            found = handshakeProblem(_request(**{**GOOD, **change}))
            self.assertIsNotNone(found, change)
            self.assertIn(problem, found or "", change)
        self.assertIn("HTTP/1.1", handshakeProblem(_request(b"HTTP/1.0", **GOOD)) or "")
