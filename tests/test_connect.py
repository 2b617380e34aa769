"""
Opening a connection: a deadline that always ends the attempt, and the hosts
of a multi-host DSN tried one at a time.
"""

from __future__ import annotations

import time

from psycopg2.extensions import parse_dsn
from twisted.internet import protocol, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txpostgres import txpostgres

from masterd.db import ConnectFailed, connect
from masterd.db._connect import candidates

from ._postgres import adminDSN


class CandidateTests(SynchronousTestCase):
    def test_multiHost(self) -> None:
        dsns, writable = candidates(
            "host=a,b port=5432,5433 dbname=x user=u target_session_attrs=read-write"
        )
        self.assertTrue(writable)
        self.assertEqual(
            [(parse_dsn(d)["host"], parse_dsn(d)["port"]) for d in dsns],
            [("a", "5432"), ("b", "5433")],
        )
        self.assertTrue(all("target_session_attrs" not in parse_dsn(d) for d in dsns))
        self.assertEqual(parse_dsn(dsns[1])["dbname"], "x")

    def test_onePortForAll(self) -> None:
        dsns, writable = candidates("host=a,b port=6000 dbname=x")
        self.assertFalse(writable)
        self.assertEqual([parse_dsn(d)["port"] for d in dsns], ["6000", "6000"])

    def test_single(self) -> None:
        dsns, writable = candidates("dbname=x")
        self.assertEqual((len(dsns), writable), (1, False))

    def test_mismatch(self) -> None:
        self.assertRaises(ConnectFailed, candidates, "host=a,b,c port=1,2")


class _Silent(protocol.Protocol):
    """
    A server that takes the connection and never says a word.
    """


class ConnectTests(TestCase):
    timeout = 60

    async def test_deadline(self) -> None:
        """
        A server that accepts and never answers: the attempt ends at the
        deadline (txpostgres' own cancel fails while connecting, and the
        attempt used to hang for good).
        """
        port = reactor.listenTCP(0, protocol.Factory.forProtocol(_Silent), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        began = time.monotonic()
        with self.assertRaises(ConnectFailed) as caught:
            await connect(
                reactor, f"host=127.0.0.1 port={port.getHost().port} dbname=x user=u",
                lambda: txpostgres.Connection(reactor=reactor), 0.5,
            )  # fmt: skip
        self.assertLess(time.monotonic() - began, 5)
        self.assertIn("no connection within 0.5 s", str(caught.exception))

    async def test_firstHostDown(self) -> None:
        """
        A host that refuses is skipped for the next one.
        """
        real = parse_dsn(adminDSN())
        dead = protocol.Factory.forProtocol(_Silent)
        port = reactor.listenTCP(0, dead, interface="127.0.0.1")
        closed = port.getHost().port
        await port.stopListening()
        hosts = f"127.0.0.1,{real['host']}"
        ports = f"{closed},{real.get('port', 5432)}"
        conn = await connect(
            reactor, f"host={hosts} port={ports} user={real['user']} dbname={real['dbname']}"
            " target_session_attrs=read-write",
            lambda: txpostgres.Connection(reactor=reactor), 5,
        )  # fmt: skip
        try:
            rows = await conn.runQuery("SELECT 1")
            self.assertEqual(rows, [(1,)])
        finally:
            conn.close()
