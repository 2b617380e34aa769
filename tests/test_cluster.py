"""
Several masters on one database: registration, heartbeats, up and down.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from masterd.cluster import MasterRegistry

from .test_talkback import AGENT, Base


class RegistryTests(Base):
    async def test_upAndDown(self) -> None:
        api = await self.setUpTalkback()
        clock = Clock()
        clock.advance(1_800_000_000)

        def registry(name: str, snapshot: dict[str, Any]) -> MasterRegistry:
            return MasterRegistry(api.pool, clock, name, ("tcp:8080",), lambda: snapshot, 10, 60)

        m1 = registry("m1", {"requests": 5})
        m2 = registry("m2", {"requests": 7})
        await m1.beat()
        await m2.beat()
        masters = await m1.masters()
        self.assertEqual([(m.name, m.state) for m in masters], [("m1", "up"), ("m2", "up")])
        self.assertEqual(masters[1].stats, {"requests": 7})
        self.assertEqual(masters[0].listen, ["tcp:8080"])
        self.assertTrue(masters[0].last_seen.endswith("Z"))
        clock.advance(61)
        await m1.beat()
        masters = await m2.masters()
        self.assertEqual([(m.name, m.state) for m in masters], [("m1", "up"), ("m2", "down")])

    async def test_overHTTP(self) -> None:
        api = await self.setUpTalkback()
        master = api.api
        master.cluster = MasterRegistry(api.pool, self.clock, "test", (), master.snapshot, 10, 60)
        await master.cluster.beat()
        body = await api.ok("GET", "/api/v1/masters")
        [item] = body["items"]
        self.assertEqual((item["name"], item["state"], item["href"]),
                         ("test", "up", "/api/v1/masters/test"))  # fmt: skip
        self.assertEqual(set(item["stats"]), {"requests", "in_flight", "avg_ms", "exceptions",
                                              "recent_exceptions", "agents_connected",
                                              "tasks_assigned"})  # fmt: skip
        self.assertEqual(item["stats"]["recent_exceptions"], [])
        self.assertEqual((await api.ok("GET", "/api/v1/masters/test"))["name"], "test")
        self.assertEqual((await api.call("GET", "/api/v1/masters/nope")).code, 404)


class ExpiryTests(Base):
    async def test_deadMastersAgentsGoOffline(self) -> None:
        """
        When a master stops heartbeating, a survivor marks its agents
        offline as of its last heartbeat; the lost grace then applies.
        """
        api = await self.setUpTalkback()
        clock = Clock()
        clock.advance(1_800_000_000)
        m1 = MasterRegistry(api.pool, clock, "m1", (), dict, 10, 60)
        m2 = MasterRegistry(api.pool, clock, "m2", (), dict, 10, 60)
        await m1.beat()
        await m2.beat()
        await api.pool.query(
            "INSERT INTO agents (id, hostname, master, session, connected_at)"
            " VALUES (%s, 'n', 'm2', gen_random_uuid(), now())",
            (AGENT,),
        )
        clock.advance(30)
        await m1.beat()
        self.assertEqual((await api.ok("GET", f"/api/v1/agents/{AGENT}"))["state"], "idle")
        clock.advance(40)  # m2 last beat 70 s ago
        await m1.beat()
        agent = await api.ok("GET", f"/api/v1/agents/{AGENT}")
        self.assertEqual((agent["state"], agent["master"]), ("offline", None))
        self.assertEqual(agent["disconnected_at"], "2027-01-15T08:00:00.000Z")
        self.assertEqual(await m1.expire(), [])

    async def test_agentsOfAnEarlierRun(self) -> None:
        """
        Agents still recorded as held by an earlier run of this master (it
        crashed) are marked offline when it starts again, so that their
        tasks follow the lost grace.
        """
        api = await self.setUpTalkback()
        clock = Clock()
        clock.advance(1_800_000_000)
        await api.pool.query(
            "INSERT INTO agents (id, hostname, master, session, connected_at)"
            " VALUES (%s, 'n', 'm1', gen_random_uuid(), to_timestamp(1799999000))",
            (AGENT,),
        )
        m1 = MasterRegistry(api.pool, clock, "m1", (), dict, 10, 60)
        await m1.beat()
        agent = await api.ok("GET", f"/api/v1/agents/{AGENT}")
        self.assertEqual((agent["state"], agent["master"]), ("offline", None))
