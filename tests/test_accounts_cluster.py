"""
Tokens across masters, with real processes on one real PostgreSQL: a token
revoked through one master is refused by another within 2 s.
"""

from __future__ import annotations

import time

from ._postgres import freshDatabase
from ._process import call, until
from .test_cluster_e2e import ClusterBase


class RevocationTests(ClusterBase):
    timeout = 180

    async def test_revokedEverywhere(self) -> None:
        dsn = await freshDatabase(self)
        await self.startMasters(dsn, ["a", "b"])
        a, b = self.url("a"), self.url("b")
        code, created = await self.call(a, "POST", "/api/v1/tokens",
                                        {"user": "alice", "role": "user"})  # fmt: skip
        self.assertEqual(code, 201, created)
        secret, href = created["secret"], created["href"]

        async def worksOn(base: str) -> bool:
            code, _ = await call(base, "/api/v1/jobs", secret)
            return code == 200

        # Created through a, usable through b at once.
        await until("the new token works on b", lambda: worksOn(b), 2.0, self.logs)
        for _ in range(5):
            self.assertTrue(await worksOn(b))  # now from b's cache

        code, body = await self.call(a, "DELETE", href)
        self.assertEqual(code, 204, body)
        revoked = time.monotonic()

        async def refusedOnB() -> bool:
            code, _ = await call(b, "/api/v1/jobs", secret)
            return code == 401

        await until("b refuses the revoked token", refusedOnB, 2.0, self.logs, interval=0.05)
        took = time.monotonic() - revoked
        self.assertLess(took, 2.0)
        self.assertFalse(await worksOn(a))
        # The audit trail names who revoked it, through which master.
        code, page = await self.call(b, "GET", "/api/v1/audit?action=token.revoke")
        self.assertEqual(code, 200, page)
        (row,) = page["items"]
        self.assertEqual((row["actor"], row["master"], row["resource"]), ("admin", "a", href))
