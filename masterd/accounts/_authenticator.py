"""
Bearer tokens: those of the configuration file (the bootstrap), and those
kept in the database, read through a short-lived cache.

Only SHA-256 digests of tokens are held. A presented token is hashed and
compared with every configured digest in constant time, so neither the
comparison nor the position of the match leaks through timing; a database
token is found by its digest (an index lookup on the hash of a secret
reveals nothing an attacker could use).

What was read from the database is trusted for at most C{cacheSeconds}
(and never past the token's expiry); a revocation announced by any master
empties every master's cache at once (L{TokensChanged}), so a revoked token
is refused everywhere within the time a notification takes, and within
C{cacheSeconds} should that notification be lost.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from masterd.config import Role, TokenConfig
from masterd.errors import Forbidden, Unauthorized

from ._principal import Principal


@frozen
class Found:
    """
    A database token's principal, and how many seconds it has left before
    it expires (C{None}: it does not).
    """

    principal: Principal
    remaining_s: float | None = None


#: Reads a database token by its digest: a found token, or None for one
#: that does not exist, is revoked or has expired.
Lookup = Callable[[bytes], Awaitable[Found | None]]


class _Miss:
    pass


#: What L{Authenticator.peek} says of a digest it must look up.
MISS: Final = _Miss()


def digestOf(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@frozen
class _Entry:
    principal: Principal | None
    until: float


class Authenticator:
    """
    @param lookup: reads database tokens; without one, only the
        configuration's tokens are known (the unit tests' case).
    """

    def __init__(
        self,
        tokens: Iterable[TokenConfig],
        lookup: Lookup | None = None,
        clock: IReactorTime | None = None,
        cacheSeconds: float = 5.0,
        maxEntries: int = 50_000,
    ) -> None:
        self._tokens = tuple((t.sha256, Principal(t.name, t.role)) for t in tokens)
        self._lookup = lookup
        self._clock = clock
        self.cacheSeconds = cacheSeconds
        self.maxEntries = maxEntries
        self._cache: dict[bytes, _Entry] = {}
        self._pending: dict[bytes, list[Deferred[Principal | None]]] = {}
        # Bumped by every invalidation: a lookup that began before one may
        # have read what the invalidation replaced, so it is not cached.
        self._generation = 0
        self.lookups = 0

    # -- finding a principal ------------------------------------------------

    def _configured(self, digest: bytes) -> Principal | None:
        found: Principal | None = None
        for candidate, principal in self._tokens:
            if hmac.compare_digest(digest, candidate):
                found = principal
        return found

    def peek(self, digest: bytes) -> Principal | _Miss | None:
        """
        What is known of a digest without asking the database: its
        principal, None for no valid token, or L{MISS}.
        """
        principal = self._configured(digest)
        if principal is not None or self._lookup is None:
            return principal
        entry = self._cache.get(digest)
        if entry is not None:
            if entry.until > self._now():
                return entry.principal
            del self._cache[digest]
        return MISS

    async def resolve(self, digest: bytes) -> Principal | None:
        """
        The principal of a digest, from the database when it must.
        """
        known = self.peek(digest)
        if not isinstance(known, _Miss):
            return known
        waiters = self._pending.get(digest)
        if waiters is None:
            # Concurrent requests with one token share one lookup.
            waiters = self._pending[digest] = []
            Deferred.fromCoroutine(self._read(digest)).addBoth(self._settle, digest)
        mine: Deferred[Principal | None] = Deferred()
        waiters.append(mine)
        return await mine

    def _settle(self, result: Principal | Failure | None, digest: bytes) -> None:
        for waiter in self._pending.pop(digest, []):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _read(self, digest: bytes) -> Principal | None:
        assert self._lookup is not None
        generation = self._generation
        self.lookups += 1
        found = await self._lookup(digest)
        principal = found.principal if found is not None else None
        if generation == self._generation:
            ttl = self.cacheSeconds
            if found is not None and found.remaining_s is not None:
                ttl = min(ttl, found.remaining_s)
            if len(self._cache) >= self.maxEntries:
                self._prune()
            self._cache[digest] = _Entry(principal, self._now() + ttl)
        return principal

    def _prune(self) -> None:
        now = self._now()
        for key in [k for k, e in self._cache.items() if e.until <= now]:
            del self._cache[key]
        if len(self._cache) >= self.maxEntries:
            self._cache.clear()

    def invalidate(self) -> None:
        """
        Forget every database token read so far: one was created, changed
        or revoked somewhere, or this master may have missed hearing so.
        """
        self._generation += 1
        self._cache.clear()

    def _now(self) -> float:
        return self._clock.seconds() if self._clock is not None else time.monotonic()

    # -- convenience for a token's text -----------------------------------------

    def identify(self, token: str) -> Principal | None:
        """
        A configuration token's principal (synchronous: no database).
        """
        known = self.peek(digestOf(token))
        return None if isinstance(known, _Miss) else known

    # -- HTTP -------------------------------------------------------------------

    @staticmethod
    def presented(request: IRequest) -> bytes:
        """
        The digest of the request's bearer token.

        @raise Unauthorized: for a missing or malformed header.
        """
        header = request.getHeader(b"authorization")
        if header is None:
            raise Unauthorized("this needs an Authorization: Bearer <token> header")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        try:
            text = token.strip().decode("utf-8")
        except UnicodeDecodeError:
            raise Unauthorized("the token is not valid") from None
        return digestOf(text)

    def requireNow(self, request: IRequest, role: Role) -> Principal | None:
        """
        The request's principal, when known without the database (None:
        await L{require}).

        @raise Unauthorized: no valid token.
        @raise Forbidden: a role that is not enough.
        """
        known = self.peek(self.presented(request))
        if isinstance(known, _Miss):
            return None
        return _checked(known, role)

    async def require(self, request: IRequest, role: Role) -> Principal:
        return _checked(await self.resolve(self.presented(request)), role)


def _checked(principal: Principal | None, role: Role) -> Principal:
    if principal is None:
        raise Unauthorized("the token is not valid (unknown, revoked or expired)")
    if not principal.may(role):
        raise Forbidden(
            f"this needs the {role.value} role; token {principal.name!r} has "
            f"{principal.role.value}",
        )
    return principal
