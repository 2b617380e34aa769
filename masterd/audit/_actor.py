"""
Who acts (L{Actor}) and the one way to write what they did (L{record}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import frozen
from psycopg2.extras import Json

if TYPE_CHECKING:
    # Only for its type: masterd.accounts writes audit rows itself.
    from masterd.accounts import Principal


@frozen
class Actor:
    """
    A principal acting through one master, from one address: everything an
    audit row says of who did something.
    """

    principal: Principal
    master: str
    address: str | None = None

    @property
    def name(self) -> str:
        return self.principal.name

    def checkOwner(self, kind: str, ident: object, owner: str) -> None:
        self.principal.checkOwner(kind, ident, owner)


def record(
    txn: Any, actor: Actor | None, action: str, resource: str, changes: dict[str, Any] | None = None
) -> None:
    """
    Write one audit row in C{txn} (a L{masterd.db.Transaction}), the
    transaction that makes the change. C{action} is C{<kind>.<verb>}
    (C{job.cancel}); C{resource} is the changed resource's href; C{changes}
    what the request asked for (never a secret). Without an actor (the
    master's own work) nothing is written.
    """
    if actor is None:
        return
    p = actor.principal
    # With the COMMIT: one round trip less for every change, which is what
    # keeps a submission as fast with its audit row as without.
    txn.withCommit(
        "INSERT INTO audit (actor, role, token_id, action, resource, changes, address, master)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (p.name, p.role.value, p.tokenID, action, resource, Json(changes or {}), actor.address,
         actor.master),
    )  # fmt: skip
