"""
Every agent is itself: enrollment with an agent token, the per-agent
credential after it, impostors refused without harm to the agent they claim
to be, the credential reset, and the hello deadline. In memory (a fake
WebSocket transport and a Clock) over a real database.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from masterd.agent.connection import AgentService, AgentSettings, _Talkback
from masterd.agent.runner import Runner
from masterd.agent.statedir import CREDENTIAL_NAME, readCredential, writeCredential
from masterd.db import Batcher, Transaction
from masterd.events import AgentMoved
from masterd.jobs import lifecycle
from masterd.talkback import FORBIDDEN, REPLACED, TIMED_OUT, UNAUTHORIZED, Refused
from masterd.talkback.store import AgentStore, Welcome

from ._api import TOKENS, startAPI
from .test_hellos import THIRD, parsed
from .test_talkback import AGENT, OTHER, Base, hello, update


def sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class EnrollmentTests(Base):
    async def setUp(self) -> None:
        await self.setUpTalkback()
        #: Every AgentMoved published here: what would evict a connection.
        self.moved: list[AgentMoved] = []
        self.api.events.subscribe(AgentMoved, self.moved.append)

    async def stored(self, agent: str = AGENT) -> tuple[Any, ...]:
        rows = await self.api.pool.query(
            "SELECT credential_sha256, enrolled_at, session::text, master FROM agents"
            " WHERE id = %s",
            (agent,),
        )
        return tuple(rows[0]) if rows else ()

    async def refused(self, message: dict[str, Any], principal: Any = None) -> dict[str, Any]:
        """
        Say C{message} on a new connection; check that it is refused for
        its credential (4403, with an error naming the field); the error.
        """
        connection, transport = self.connect(principal)
        await self.say(connection, message)
        [error, closing] = transport.sent
        self.assertEqual((error["type"], error["field"]), ("error", "credential"), error)
        self.assertEqual((closing["code"], transport.closed), (FORBIDDEN, FORBIDDEN))
        self.assertNotIn(connection, self.registry.connections.values())
        result: dict[str, Any] = error
        return result

    async def test_enrollStoresOnlyTheDigest(self) -> None:
        """
        The first hello with an agent token enrolls the id: the welcome
        carries a new secret, and the database keeps only its SHA-256.
        """
        _, transport = await self.joined()
        secret = transport.sent[0]["credential"]
        self.assertTrue(secret.startswith("mda_"))
        self.assertGreaterEqual(len(secret), 4 + 43)  # 32 random bytes
        digest, enrolledAt, _, _ = await self.stored()
        self.assertEqual(bytes(digest), sha256(secret))
        self.assertIsNotNone(enrolledAt)
        # Nowhere in the row as text.
        [(row,)] = await self.api.pool.query(
            "SELECT to_jsonb(a)::text FROM agents a WHERE id = %s", (AGENT,)
        )
        self.assertNotIn(secret, row)
        self.assertIsNotNone((await self.agent())["enrolled_at"])
        # Another agent gets a secret of its own.
        _, other = await self.joined(OTHER)
        self.assertNotEqual(other.sent[0]["credential"], secret)

    async def test_credentialAloneAfterwards(self) -> None:
        """
        Once enrolled, the credential is enough: no token (as when the
        enrollment token has been revoked), or a token no longer valid; the
        welcome carries no new secret and the enrollment is kept.
        """
        first, _ = await self.joined()
        before = await self.stored()
        await self.lose(first)
        for token in (None, "revoked-token-0123456789"):
            connection, transport = self.connect()
            await self.say(connection, self.helloOf(token=token))
            self.assertEqual(transport.types(), ["welcome"])
            self.assertIsNone(transport.sent[0]["credential"])
            self.assertEqual((await self.stored())[:2], before[:2])
            await self.lose(connection)

    async def test_impostorRefused(self) -> None:
        """
        A hello for an enrolled id with the right token but no credential,
        or a wrong one, or a viewer's token, is refused with 4403: the
        connected agent keeps its connection, its session and its tasks,
        nothing is announced, and it goes on reporting.
        """
        victim, transport = await self.joined()
        a, b = await self.assign(frames="1-2")
        await self.say(victim, update(a, "running", progress=0.5))
        transport.take()
        session = victim.session
        principal = self.api.auth.identify(TOKENS["agent"])
        for message, upgrade in [
            (hello(), None),
            (hello(token=None), principal),
            (hello(credential="mda_" + "x" * 43), None),
            (hello(token=TOKENS["admin"], credential=""), None),
            (hello(token=TOKENS["viewer"], credential="mda_guess"), None),
            (hello(running=[{"task_id": b.task_id, "attempt": b.attempt}]), None),
        ]:
            error = await self.refused(message, upgrade)
            self.assertIn("must present its credential", error["message"])
        self.assertIsNone(transport.closed)
        self.assertEqual(transport.sent, [])
        self.assertIs(self.registry.connections[AGENT], victim)
        self.assertEqual(self.moved, [])
        self.assertEqual((await self.stored())[2:], (session, "test"))
        rows = await self.api.pool.query(
            "SELECT t.id, t.state, t.agent_id::text, t.progress, at.state FROM tasks t"
            " JOIN task_attempts at ON at.task_id = t.id AND at.attempt = t.attempt"
            " WHERE t.id = ANY (%s) ORDER BY t.id",
            ([a.task_id, b.task_id],),
        )
        self.assertEqual(
            [tuple(r) for r in rows],
            [(a.task_id, "running", AGENT, 0.5, "running"),
             (b.task_id, "assigned", AGENT, 0.0, "assigned")],
        )  # fmt: skip
        # The victim carries on as if nothing happened.
        await self.say(victim, update(a, "done", exit_code=0))
        self.assertEqual(transport.take()[0]["type"], "ack")
        self.assertEqual((await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}"))["state"], "done")
        self.assertEqual((await self.agent())["state"], "busy")

    async def test_rightCredentialReplaces(self) -> None:
        """
        The id's own credential on a new connection is the agent
        reconnecting: the newer connection wins, as before.
        """
        first, transport = await self.joined()
        second, _ = await self.joined()
        self.assertEqual(transport.closed, REPLACED)
        self.assertIs(self.registry.connections[AGENT], second)
        self.assertEqual(len(self.moved), 1)
        await self.lose(first)

    async def test_notEnrolled(self) -> None:
        """
        A credential for an id that is not enrolled is refused without a
        token (nothing written); with one, the id is enrolled anew.
        """
        await self.refused(hello(token=None, credential="mda_made-up"))
        self.assertEqual(await self.stored(), ())
        self.assertEqual((await self.api.call("GET", f"/api/v1/agents/{AGENT}")).code, 404)
        _, transport = await self.joined(credential="mda_made-up")
        self.assertNotEqual(transport.sent[0]["credential"], "mda_made-up")
        self.assertEqual(bytes((await self.stored())[0]), sha256(self.credentials[AGENT]))

    async def test_noTokenNoCredential(self) -> None:
        """
        Neither a token nor a credential: 4401, as before, without a
        database round trip.
        """
        connection, transport = self.connect()
        await self.say(connection, hello(token=None))
        self.assertEqual(transport.sent[0]["field"], "token")
        self.assertEqual(transport.closed, UNAUTHORIZED)

    async def test_resetThenEnrollAgain(self) -> None:
        """
        An admin's reset forgets the credential (audited): the old one no
        longer works alone, and the next hello with an agent token enrolls
        the id anew. The connection open at the reset is left alone.
        """
        connection, transport = await self.joined()
        old = self.credentials[AGENT]
        path = f"/api/v1/agents/{AGENT}/credential/reset"
        for role, status in (("operator", 403), ("agent", 403), ("viewer", 403)):
            self.assertEqual((await self.api.call("POST", path, role=role)).code, status, role)
        self.assertEqual(await self.api.count("audit"), 0)
        agent = await self.api.ok("POST", path)
        self.assertEqual((agent["id"], agent["enrolled_at"], agent["state"]), (AGENT, None, "idle"))
        self.assertEqual((await self.stored())[:2], (None, None))
        [row] = await self.api.pool.query("SELECT actor, action, resource FROM audit")
        self.assertEqual(tuple(row), ("admin", "agent.credential_reset", f"/api/v1/agents/{AGENT}"))
        self.assertIsNone(transport.closed)
        await self.lose(connection)
        error = await self.refused(hello(token=None, credential=old))
        self.assertIn("not enrolled", error["message"])
        _, again = await self.joined(credential=old)
        self.assertNotEqual(again.sent[0]["credential"], old)
        self.assertEqual(bytes((await self.stored())[0]), sha256(again.sent[0]["credential"]))
        # An unknown agent: 404, and no audit row.
        missing = await self.api.call("POST", f"/api/v1/agents/{OTHER}/credential/reset")
        self.assertEqual(missing.code, 404)
        self.assertEqual(await self.api.count("audit"), 1)

    async def test_lostWhileEnrolling(self) -> None:
        """
        A connection lost while its enrolling hello is being written never
        got its secret: the enrollment is undone, so that the agent can
        enroll when it comes back.
        """
        store = self.registry.store
        written: list[Welcome | Refused] = []
        gate: Deferred[None] = Deferred()
        real = store.connect

        async def connect(*args: Any, **kwargs: Any) -> Welcome | Refused:
            outcome = await real(*args, **kwargs)
            written.append(outcome)
            await gate
            return outcome

        store.connect = connect  # type: ignore[method-assign]
        connection, _ = self.connect()
        connection.textMessageReceived(json.dumps(hello()))
        for _ in range(200):
            if written:
                break
            await deferLater(reactor, 0.01)
        self.assertIsNotNone((await self.stored())[0])
        connection.connectionLost(Failure(ConnectionError("gone")))
        gate.callback(None)
        await connection.drained()
        self.assertEqual((await self.stored())[:3], (None, None, None))
        store.connect = real  # type: ignore[method-assign]
        _, again = await self.joined()
        self.assertIsNotNone(again.sent[0]["credential"])


class BatchTests(Base):
    """
    The credential is checked in the hello lane's one statement per round.
    """

    async def setUpStore(self) -> tuple[AgentStore, Batcher, str]:
        self.api = await startAPI(self)
        batcher = Batcher(self.api.pool)
        store = AgentStore(self.api.pool, batcher)
        [outcome] = await self.outcomes(store, [(parsed(AGENT), True)])
        assert isinstance(outcome, Welcome) and outcome.credential is not None
        return store, batcher, outcome.credential

    async def outcomes(
        self, store: AgentStore, hellos: list[tuple[Any, bool]]
    ) -> list[Welcome | Refused]:
        pending: list[Deferred[Welcome | Refused]] = [
            Deferred.fromCoroutine(store.connect(h, "m", str(uuid.uuid4()), 1e9, mayEnroll))
            for h, mayEnroll in hellos
        ]
        results = await DeferredList(pending, fireOnOneErrback=True, consumeErrors=True)
        return [outcome for _, outcome in results]

    async def session(self, agent: str = AGENT) -> str | None:
        rows = await self.api.pool.query("SELECT session::text FROM agents WHERE id = %s", (agent,))
        return rows[0][0] if rows else None

    async def test_impostorInTheSameBatch(self) -> None:
        """
        The agent and an impostor in one batch, in either order: the agent
        is welcomed, the impostor refused, and the impostor's hello never
        takes the agent's place, not even for a round.
        """
        store, batcher, secret = await self.setUpStore()
        mine, impostor = parsed(AGENT, credential=secret), parsed(AGENT)
        for order in ((mine, impostor), (impostor, mine)):
            batches = batcher.batches
            outcomes = await self.outcomes(store, [(h, True) for h in order])
            self.assertEqual(batcher.batches - batches, 1)
            kinds = [type(o) for o in outcomes]
            self.assertEqual(kinds, [Welcome, Refused] if order[0] is mine else [Refused, Welcome])
            for outcome in outcomes:
                if isinstance(outcome, Refused):
                    self.assertTrue(outcome.enrolled)
                else:
                    self.assertIsNone(outcome.credential)
        [(digest,)] = await self.api.pool.query("SELECT credential_sha256 FROM agents")
        self.assertEqual(bytes(digest), sha256(secret))

    async def test_enrollmentRaceInOneBatch(self) -> None:
        """
        Two first hellos of a new id in one batch: the first enrolls it, the
        second is refused (it cannot know the first one's secret).
        """
        store, batcher, _ = await self.setUpStore()
        batches = batcher.batches
        first, second = await self.outcomes(store, [(parsed(THIRD), True), (parsed(THIRD), True)])
        self.assertEqual(batcher.batches - batches, 1)
        assert isinstance(first, Welcome) and first.credential is not None
        self.assertEqual(second, Refused(enrolled=True))
        [(digest,)] = await self.api.pool.query(
            "SELECT credential_sha256 FROM agents WHERE id = %s", (THIRD,)
        )
        self.assertEqual(bytes(digest), sha256(first.credential))

    async def test_enrollmentRaceAcrossMasters(self) -> None:
        """
        Two first hellos of a new id in two transactions at once (two
        masters): neither sees the other's row when it starts; the second
        waits on the first's insert and, once that commits, is refused
        rather than taking the enrolled id over.
        """
        self.api = await startAPI(self)
        pool = self.api.pool
        storeA, storeB = AgentStore(pool), AgentStore(pool)
        written: Deferred[None] = Deferred()
        gate: Deferred[None] = Deferred()
        sessionA = str(uuid.uuid4())

        async def first(txn: Transaction) -> Welcome | Refused:
            [outcome] = await storeA._applyHellos(txn, [(parsed(THIRD), "a", sessionA, 1e9, True)])
            written.callback(None)
            await gate  # not committed yet
            return outcome

        pendingA = Deferred.fromCoroutine(pool.transaction(first))
        await written
        pendingB = Deferred.fromCoroutine(
            storeB.connect(parsed(THIRD), "b", str(uuid.uuid4()), 1e9, True)
        )
        waiting = 0
        for _ in range(500):
            [(waiting,)] = await pool.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
            if waiting:
                break
            await deferLater(reactor, 0.01)
        activity = await pool.query(
            "SELECT state, wait_event_type, wait_event, left(query, 60) FROM pg_stat_activity"
            " WHERE datname = current_database()"
        )
        self.assertEqual(waiting, 1, f"the second hello does not wait on the first: {activity}")
        gate.callback(None)
        outcomeA, outcomeB = await pendingA, await pendingB
        assert isinstance(outcomeA, Welcome) and outcomeA.credential is not None
        self.assertEqual(outcomeB, Refused(enrolled=True))
        [row] = await pool.query(
            "SELECT credential_sha256, session::text, master FROM agents WHERE id = %s", (THIRD,)
        )
        self.assertEqual((bytes(row[0]), row[1], row[2]), (sha256(outcomeA.credential), sessionA,
                                                           "a"))  # fmt: skip

    async def test_refusedTouchesNoTask(self) -> None:
        """
        A refused hello listing nothing leaves the agent's tasks assigned
        (it would have requeued them as lost had it been accepted).
        """
        store, _, secret = await self.setUpStore()
        job = await self.api.submit(frames="1-2")
        ids = [r[0] for r in await self.api.pool.query(
            "SELECT id FROM tasks WHERE job_id = %s ORDER BY index", (job["id"],))]  # fmt: skip
        await self.api.pool.transaction(lambda txn: lifecycle.assign(txn, AGENT, ids))
        session = await self.session()
        [outcome] = await self.outcomes(store, [(parsed(AGENT, credential="mda_wrong"), True)])
        self.assertIsInstance(outcome, Refused)
        self.assertEqual(await self.session(), session)
        rows = await self.api.pool.query(
            "SELECT state, agent_id::text FROM tasks WHERE id = ANY (%s)", (ids,)
        )
        self.assertEqual(sorted(tuple(r) for r in rows), [("assigned", AGENT)] * 2)
        del secret


class HelloDeadlineTests(Base):
    async def test_closedWithoutHello(self) -> None:
        """
        Nothing said within hello_timeout_s: closed with 4408, saying why,
        on time (the timer visits a connection at its deadline, not only at
        its pings).
        """
        await self.setUpTalkback(heartbeat_s=10, hello_timeout_s=3)
        _, transport = self.connect()
        self.clock.advance(2.9)
        self.assertIsNone(transport.closed)
        self.clock.advance(0.2)
        self.assertEqual(transport.closed, TIMED_OUT)
        self.assertEqual(transport.sent[-1], {"type": "closing", "code": TIMED_OUT,
                                              "reason": "hello timed out"})  # fmt: skip

    async def test_badHellosDoNotHoldItOpen(self) -> None:
        """
        Bad hellos, and messages that are not a hello, do not hold an
        unauthenticated connection open past the deadline.
        """
        await self.setUpTalkback(heartbeat_s=10, hello_timeout_s=3)
        connection, transport = self.connect()
        for _ in range(5):
            self.clock.advance(0.5)
            await self.say(connection, hello(agent="nope"))
        self.assertIsNone(transport.closed)
        self.clock.advance(0.6)
        self.assertEqual(transport.closed, TIMED_OUT)

    async def test_helloInTimeStays(self) -> None:
        """
        A connection that said a valid hello in time is not closed at the
        deadline, and is pinged as usual.
        """
        await self.setUpTalkback(heartbeat_s=10, hello_timeout_s=3)
        connection, transport = self.connect()
        self.clock.advance(2.5)
        await self.say(connection, hello())
        self.welcomed(AGENT, transport)
        for _ in range(6):
            self.clock.advance(5)
            connection.pongReceived(b"")
        self.assertIsNone(transport.closed)
        self.assertEqual(transport.pings, 3)

    async def test_helloCheckedPastTheDeadline(self) -> None:
        """
        A hello still being checked in the database when the deadline
        passes (waiting on the agent's row lock) is not cut short: its
        answer decides. Accepted, it stays; refused, it is closed for that.
        """
        await self.setUpTalkback(heartbeat_s=10, hello_timeout_s=3)
        first, _ = await self.joined()
        await self.lose(first)
        for message, closed in ((self.helloOf(), None), (hello(), FORBIDDEN)):
            gate: Deferred[None] = Deferred()
            locked: Deferred[None] = Deferred()

            async def hold(txn: Transaction, gate: Deferred[None] = gate,
                           locked: Deferred[None] = locked) -> None:  # fmt: skip
                await txn.query("SELECT 1 FROM agents WHERE id = %s FOR UPDATE", (AGENT,))
                locked.callback(None)
                await gate

            holding = Deferred.fromCoroutine(self.api.pool.transaction(hold))
            await locked
            connection, transport = self.connect()
            connection.textMessageReceived(json.dumps(message))
            await self.untilWaiting()
            self.clock.advance(5)
            self.assertIsNone(transport.closed)
            gate.callback(None)
            await holding
            await connection.drained()
            self.assertEqual(transport.closed, closed, transport.sent)
            if closed is None:
                self.assertEqual(transport.types(), ["welcome"])
                self.clock.advance(5)
                self.assertIsNone(transport.closed)
            await self.lose(connection)

    async def untilWaiting(self) -> None:
        for _ in range(500):
            [(waiting,)] = await self.api.pool.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
            if waiting:
                return
            await deferLater(reactor, 0.01)
        self.fail("the hello does not wait on the row lock")

    async def test_helloFailingPastTheDeadline(self) -> None:
        """
        A hello that ends without making the connection an agent's after the
        deadline passed (the master failed to handle it) closes it then.
        """
        await self.setUpTalkback(heartbeat_s=10, hello_timeout_s=3)
        store = self.registry.store
        gate: Deferred[None] = Deferred()

        async def connect(*args: Any, **kwargs: Any) -> Welcome | Refused:
            await gate
            raise RuntimeError("boom")

        store.connect = connect  # type: ignore[method-assign]
        connection, transport = self.connect()
        connection.textMessageReceived(json.dumps(hello()))
        self.clock.advance(5)
        self.assertIsNone(transport.closed)
        gate.callback(None)
        await connection.drained()
        self.assertEqual(transport.closed, TIMED_OUT)
        self.flushLoggedErrors(RuntimeError)


class AgentCredentialTests(SynchronousTestCase):
    """
    The reference agent keeps its credential in its state directory.
    """

    def setUp(self) -> None:
        self.stateDir = Path(self.mktemp())
        self.clock = Clock()

    def service(self, token: str | None = "t") -> AgentService:
        runner = Runner(self.clock, self.stateDir, lambda message: None)
        settings = AgentSettings(AGENT, token, ("ws://a",), "h", state_dir=self.stateDir)
        return AgentService(self.clock, settings, runner)

    def hello(self, service: AgentService) -> tuple[_Talkback, list[dict[str, Any]]]:
        from .test_agent_reconnect import _Transport

        connection = _Talkback(service)
        transport = _Transport()
        connection.negotiationStarted(transport)  # type: ignore[arg-type]
        connection.negotiationFinished()
        return connection, [json.loads(t) for t in transport.sent]

    def test_writtenAtOnce(self) -> None:
        """
        The welcome's credential is on disk, 0600, before the welcome is
        acted on, and every later hello presents it with the token.
        """
        service = self.service()
        connection, [first] = self.hello(service)
        self.assertNotIn("credential", first)
        self.assertEqual(first["token"], "t")
        seen: list[str | None] = []
        connection.flush = lambda: seen.append(readCredential(self.stateDir))  # type: ignore[method-assign]
        connection.textMessageReceived(
            json.dumps({"type": "welcome", "heartbeat_s": 10, "credential": "mda_secret"})
        )
        self.assertEqual(seen, ["mda_secret"])
        path = self.stateDir / CREDENTIAL_NAME
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual([p.name for p in self.stateDir.iterdir() if p.name.startswith(".")], [])
        _, [again] = self.hello(service)
        self.assertEqual((again["credential"], again["token"]), ("mda_secret", "t"))
        # A restarted agent reads it back; without a token it sends it alone.
        _, [restarted] = self.hello(self.service(token=None))
        self.assertEqual(restarted["credential"], "mda_secret")
        self.assertNotIn("token", restarted)

    def test_replacedAtomically(self) -> None:
        """
        A new credential replaces the old one whole; the file is 0600 even
        under a permissive umask.
        """
        old = os.umask(0)
        try:
            writeCredential(self.stateDir, "mda_one")
            writeCredential(self.stateDir, "mda_two")
        finally:
            os.umask(old)
        self.assertEqual(readCredential(self.stateDir), "mda_two")
        mode = stat.S_IMODE((self.stateDir / CREDENTIAL_NAME).stat().st_mode)
        self.assertEqual(mode, 0o600)
        self.assertEqual(sorted(p.name for p in self.stateDir.iterdir()), [CREDENTIAL_NAME])

    def test_welcomeWithoutCredential(self) -> None:
        service = self.service()
        connection, _ = self.hello(service)
        connection.textMessageReceived(
            json.dumps({"type": "welcome", "heartbeat_s": 10, "credential": None})
        )
        self.assertIsNone(readCredential(self.stateDir))
        self.assertIsNone(service.credential)
