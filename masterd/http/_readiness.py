"""
What the routes ask before serving.
"""

from __future__ import annotations

from typing import Protocol


class Readiness(Protocol):
    """
    Whether the master may serve (L{masterd.service.MasterReadiness}).
    """

    @property
    def ready(self) -> bool: ...

    async def ping(self) -> bool: ...

    def details(self) -> dict[str, str]: ...
