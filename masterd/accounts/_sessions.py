"""
Sessions in PostgreSQL: opened with a token, looked up by the digest of
their cookie's secret, ended by signing out, expiry, or their token's end.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from attrs import frozen

from masterd._time import isotime
from masterd.config import Role
from masterd.db import Pool, Transaction

from ._authenticator import SessionRecord
from ._principal import Principal

#: Session secrets start with this, so that secret scanners can spot one.
PREFIX = "mds_"


@frozen
class Opened:
    """
    A session just opened: the cookie's secret (given to the browser only)
    and what the page is told.
    """

    secret: str
    csrf: str
    expires_at: str


class SessionStore:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def lookup(self, digest: bytes) -> SessionRecord | None:
        """
        A live session by its cookie's digest, with its token as it is now.
        """
        rows = await self._pool.query(
            "SELECT s.csrf, s.token_sha256, t.user_name, t.role,"
            " EXTRACT(EPOCH FROM least(s.expires_at, coalesce(t.expires_at, s.expires_at))"
            " - now())::float8"
            " FROM sessions s LEFT JOIN tokens t ON t.id = s.token_id"
            " WHERE s.sha256 = %s AND s.expires_at > now() AND (s.token_id IS NULL"
            " OR (t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())))",
            (digest,),
        )
        if not rows:
            return None
        csrf, configured, user, role, remaining = rows[0]
        principal = None if configured is not None else Principal(user, Role(role))
        return SessionRecord(
            principal, bytes(configured) if configured is not None else None, csrf, remaining
        )

    async def open(
        self,
        txn: Transaction,
        principal: Principal,
        tokenDigest: bytes,
        lifetime_s: float,
        address: str | None,
    ) -> Opened:
        """
        Open a session for the holder of a token (its digest): a database
        token's by its id, a configuration token's by its digest. Sessions
        long expired are cleared on the way, a few at a time.
        """
        await txn.execute(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions"
            " WHERE expires_at < now() - interval '1 day' ORDER BY expires_at LIMIT 100)"
        )
        secret = PREFIX + secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        rows = await txn.query(
            "INSERT INTO sessions (sha256, csrf, user_name, role, token_id, token_sha256,"
            " expires_at, address) VALUES (%s, %s, %s, %s, %s, %s,"
            " now() + make_interval(secs => %s), %s) RETURNING expires_at",
            (
                hashlib.sha256(secret.encode("ascii")).digest(),
                csrf,
                principal.name,
                principal.role.value,
                principal.tokenID,
                None if principal.tokenID is not None else tokenDigest,
                lifetime_s,
                address,
            ),
        )
        expires: datetime = rows[0][0]
        return Opened(secret, csrf, isotime(expires))

    async def expiry(self, digest: bytes) -> str | None:
        rows = await self._pool.query(
            "SELECT expires_at FROM sessions WHERE sha256 = %s", (digest,)
        )
        return isotime(rows[0][0]) if rows else None

    async def end(self, txn: Transaction, digest: bytes) -> bool:
        """
        End a session (signing out); whether there was one.
        """
        rows = await txn.query("DELETE FROM sessions WHERE sha256 = %s RETURNING id", (digest,))
        return bool(rows)
