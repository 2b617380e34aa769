"""
One way to say "something changed": L{EventBus.announce} in the transaction
that makes the change. The NOTIFY goes out with the commit and the local
publish follows it; after a rollback, neither.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from masterd.db import Transaction
from masterd.events import EventBus, WorkAvailable

from ._api import API
from .test_notify import ListeningBase

ROOT = Path(__file__).resolve().parent.parent / "masterd"


class Boom(Exception):
    pass


class AnnounceTests(ListeningBase):
    async def twoMasters(self) -> tuple[API, list[Any], EventBus, list[Any]]:
        """
        The test's API, what another master hears, and a bus here with what
        it publishes of WorkAvailable.
        """
        api = await self.setUpTalkback()
        _, heardThere = await self.listener("other")
        bus = EventBus(origin="here")
        heardHere: list[Any] = []
        bus.subscribe(WorkAvailable, heardHere.append)
        return api, heardThere, bus, heardHere

    async def test_afterCommit(self) -> None:
        api, heardThere, bus, heardHere = await self.twoMasters()

        async def work(txn: Transaction) -> None:
            await bus.announce(txn, WorkAvailable((7,)))
            # Not before the commit: a subscriber would read the old rows.
            self.assertEqual(heardHere, [])

        await api.pool.transaction(work)
        self.assertEqual(heardHere, [WorkAvailable((7,))])
        await self.until(lambda: WorkAvailable((7,)) in heardThere)

    async def test_neitherAfterRollback(self) -> None:
        api, heardThere, bus, heardHere = await self.twoMasters()

        async def work(txn: Transaction) -> None:
            await bus.announce(txn, WorkAvailable((8,)))
            raise Boom()

        with self.assertRaises(Boom):
            await api.pool.transaction(work)
        # A later announcement arrives: the rolled-back one never will.
        await api.pool.transaction(lambda txn: bus.announce(txn, WorkAvailable((9,))))
        await self.until(lambda: WorkAvailable((9,)) in heardThere)
        self.assertNotIn(WorkAvailable((8,)), heardThere)
        self.assertEqual(heardHere, [WorkAvailable((9,))])

    async def test_widenedRequirementsWakeAgentsHere(self) -> None:
        """
        A PATCH that widens a job's requirements wakes this master's agents
        as it wakes other masters' (the halves had drifted apart).
        """
        api = await self.setUpTalkback()
        _, heardThere = await self.listener("other")
        heardHere: list[Any] = []
        api.events.subscribe(WorkAvailable, heardHere.append)
        job = await api.submit(frames="1-2", requirements={"cpus": 64})
        heardHere.clear()
        await api.ok("PATCH", f"/api/v1/jobs/{job['id']}", {"requirements": {"cpus": 1}})
        self.assertEqual(heardHere, [WorkAvailable((job["id"],))])
        await self.until(lambda: WorkAvailable((job["id"],)) in heardThere)

    async def test_deletedParentReleasesChildren(self) -> None:
        """
        Deleting the only unfinished parent of a job releases its tasks: and
        says so (it used to say nothing).
        """
        api = await self.setUpTalkback()
        parent = await api.submit(frames="1")
        child = await api.submit(frames="1", depends_on=[parent["id"]])
        await api.ok("POST", f"/api/v1/jobs/{parent['id']}/cancel")
        heardHere: list[Any] = []
        api.events.subscribe(WorkAvailable, heardHere.append)
        await api.ok("DELETE", f"/api/v1/jobs/{parent['id']}", status=204)
        self.assertIn(WorkAvailable((child["id"],)), heardHere)


class OneMechanismTests(SynchronousTestCase):
    def test_noHandWrittenHalves(self) -> None:
        """
        The stores change the database and announce in one call: none of
        them publishes by hand, and the NOTIFY is sent in one place.
        """
        for path in ROOT.rglob("*.py"):
            text = path.read_text()
            relative = path.relative_to(ROOT).as_posix()
            self.assertNotIn("pg_notify", text, relative)
            if relative.endswith("store.py") or relative.endswith("directory.py"):
                self.assertIsNone(re.search(r"\.publish\(", text), relative)
        sql = "".join(p.read_text() for p in (ROOT / "db" / "migrations").glob("*.sql"))
        # masterd_announce's own call, and the original trigger's (replaced
        # by migration 0006, kept as history).
        self.assertEqual(sql.count("pg_notify("), 2)
