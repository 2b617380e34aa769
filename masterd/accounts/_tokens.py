"""
Tokens in PostgreSQL: created, listed, revoked and looked up by digest.
Only the SHA-256 of a secret is stored; the secret is shown once.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from masterd._time import isoformat, isotime
from masterd.config import Role
from masterd.db import Pool, Transaction
from masterd.errors import Conflict, NoSuchResource, Unprocessable
from masterd.events import EventBus, TokensChanged

from ._authenticator import Found
from ._principal import Principal
from .models import CreatedToken, TokenDocument

#: Secrets start with this, so that secret scanners can spot a leaked one.
PREFIX = "mdt_"

_COLUMNS = (
    "id, user_name, role, description, created_at, created_by, expires_at, revoked_at,"
    " revoked_by, revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
)


def newSecret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def tokenDocument(row: tuple[Any, ...]) -> TokenDocument:
    id_, user, role, description, created, by, expires, revoked, revokedBy, active = row
    return TokenDocument(
        id=id_,
        href=f"/api/v1/tokens/{id_}",
        user=user,
        role=role,
        description=description,
        created_at=isotime(created),
        created_by=by,
        expires_at=isoformat(expires),
        revoked_at=isoformat(revoked),
        revoked_by=revokedBy,
        active=active,
    )


class TokenStore:
    def __init__(self, pool: Pool, events: EventBus) -> None:
        self._pool = pool
        self._events = events

    async def lookup(self, digest: bytes) -> Found | None:
        """
        The principal of a valid (unrevoked, unexpired) token's digest.
        """
        rows = await self._pool.query(
            "SELECT id, user_name, role, EXTRACT(EPOCH FROM expires_at - now())::float8"
            " FROM tokens WHERE sha256 = %s AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > now())",
            (digest,),
        )
        if not rows:
            return None
        id_, user, role, remaining = rows[0]
        return Found(Principal(user, Role(role), id_), remaining)

    async def create(
        self,
        txn: Transaction,
        *,
        user: str,
        role: str,
        description: str,
        expires: datetime | None,
        createdBy: str,
    ) -> CreatedToken:
        if expires is not None:
            future = await txn.query("SELECT %s::timestamptz > now()", (expires,))
            if not future[0][0]:
                # The schema cannot say "in the future": 422, as for every
                # schema-valid value only the master can judge.
                raise Unprocessable("expires_at", "is in the past; a token must expire later")
        secret = newSecret()
        rows = await txn.query(
            "INSERT INTO tokens (user_name, role, sha256, description, created_by, expires_at)"
            f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (user, role, hashlib.sha256(secret.encode()).digest(), description, createdBy,
             expires),
        )  # fmt: skip
        document = tokenDocument(rows[0])
        # A token tried before it existed may be cached as unknown.
        await self._events.announce(txn, TokensChanged(document.id))
        return CreatedToken(**{f: getattr(document, f) for f in document.__struct_fields__},
                            secret=secret)  # fmt: skip

    async def get(self, tokenID: int) -> TokenDocument:
        rows = await self._pool.query(f"SELECT {_COLUMNS} FROM tokens WHERE id = %s", (tokenID,))
        if not rows:
            raise NoSuchResource("token", tokenID)
        return tokenDocument(rows[0])

    async def list(
        self, *, user: str | None, revoked: bool, limit: int, after: int | None
    ) -> tuple[list[TokenDocument], bool]:
        where = ["TRUE"]
        params: list[Any] = []
        if user is not None:
            where.append("user_name = %s")
            params.append(user)
        if not revoked:
            where.append("revoked_at IS NULL")
        if after is not None:
            where.append("id > %s")
            params.append(after)
        params.append(limit + 1)
        rows = await self._pool.query(
            f"SELECT {_COLUMNS} FROM tokens WHERE {' AND '.join(where)} ORDER BY id LIMIT %s",
            params,
        )
        return [tokenDocument(r) for r in rows[:limit]], len(rows) > limit

    async def revoke(self, txn: Transaction, tokenID: int, by: str) -> TokenDocument:
        rows = await txn.query(
            f"UPDATE tokens SET revoked_at = now(), revoked_by = %s"
            f" WHERE id = %s AND revoked_at IS NULL RETURNING {_COLUMNS}",
            (by, tokenID),
        )
        if not rows:
            exists = await txn.query("SELECT revoked_at FROM tokens WHERE id = %s", (tokenID,))
            if not exists:
                raise NoSuchResource("token", tokenID)
            raise Conflict(f"token {tokenID} is already revoked", state="revoked")
        await self._events.announce(txn, TokensChanged(tokenID))
        return tokenDocument(rows[0])
