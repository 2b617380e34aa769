"""
Several masters on one database: registration, heartbeats, up and down.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from masterd.cluster import MasterRegistry

from .test_talkback import Base


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
        self.assertEqual([(m["name"], m["state"]) for m in masters], [("m1", "up"), ("m2", "up")])
        self.assertEqual(masters[1]["stats"], {"requests": 7})
        self.assertEqual(masters[0]["listen"], ["tcp:8080"])
        self.assertTrue(masters[0]["last_seen"].endswith("Z"))
        clock.advance(61)
        await m1.beat()
        masters = await m2.masters()
        self.assertEqual([(m["name"], m["state"]) for m in masters], [("m1", "up"), ("m2", "down")])

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
                                              "agents_connected"})  # fmt: skip
        self.assertEqual((await api.ok("GET", "/api/v1/masters/test"))["name"], "test")
        self.assertEqual((await api.call("GET", "/api/v1/masters/nope")).code, 404)
