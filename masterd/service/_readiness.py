"""
Ready means ready: a master serves only once its database is migrated and
reachable and it is registered in the masters table.
"""

from __future__ import annotations

from typing import Protocol

from attrs import define


class _Database(Protocol):
    @property
    def ready(self) -> bool: ...

    @property
    def state(self) -> str: ...

    async def ping(self) -> bool: ...


class _Registration(Protocol):
    registered: bool


@define
class MasterReadiness:
    """
    What C{/readyz}, the routes and the talkback upgrade ask before serving.
    """

    database: _Database
    #: The masters-table registration; None where there is none (tests).
    cluster: _Registration | None = None

    @property
    def ready(self) -> bool:
        return self.database.ready and (self.cluster is None or self.cluster.registered)

    async def ping(self) -> bool:
        """
        Ready, and the database answers right now.
        """
        return self.ready and await self.database.ping()

    def details(self) -> dict[str, str]:
        """
        Why not ready, for C{/readyz}'s answer.
        """
        found = {"database": self.database.state}
        if self.cluster is not None:
            found["cluster"] = "registered" if self.cluster.registered else "registering"
        return found
