"""
Bearer tokens: those of the configuration file (the bootstrap), and those
kept in the database, read through a short-lived cache; and the sessions of
the dashboard (a cookie, exchanged for a token at C{POST /api/v1/session}),
read the same way.

Only SHA-256 digests of tokens are held. A presented token is hashed and
compared with every configured digest in constant time, so neither the
comparison nor the position of the match leaks through timing; a database
token is found by its digest (an index lookup on the hash of a secret
reveals nothing an attacker could use).

What was read from the database is trusted for at most C{cacheSeconds}
(and never past the token's expiry); a revocation announced by any master
empties every master's cache at once (L{TokensChanged}), so a revoked token
is refused everywhere within the time a notification takes, and within
C{cacheSeconds} should that notification be lost. A session is only as
good as the token it was opened with: it ends when that token is revoked,
expires or leaves the configuration file, and a change made with it needs
its CSRF token in the C{X-CSRF-Token} header (a page of another site can
make a browser send the cookie, never read the CSRF token).
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


@frozen
class SessionRecord:
    """
    A session as stored: the principal of the database token it was opened
    with (as that token is now), or the digest of the configuration token it
    was opened with; its CSRF token; the seconds it has left.
    """

    principal: Principal | None
    configured: bytes | None
    csrf: str
    remaining_s: float


#: Reads a database token by its digest: a found token, or None for one
#: that does not exist, is revoked or has expired.
Lookup = Callable[[bytes], Awaitable[Found | None]]
#: Reads a session by the digest of its cookie: None for one that does not
#: exist, has ended or whose token is no longer valid.
SessionLookup = Callable[[bytes], Awaitable[SessionRecord | None]]

#: The session cookie's name.
SESSION_COOKIE = "masterd_session"
#: Methods that change nothing: no CSRF token needed.
_SAFE = frozenset({b"GET", b"HEAD", b"OPTIONS"})
#: Cache keys of sessions are this byte and the cookie's digest (a token's
#: key is its digest alone: 32 bytes, never 33).
_SESSION = b"s"


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
    #: A session's CSRF token; None for a bearer token.
    csrf: str | None = None


@frozen
class Credential:
    """
    What a request presented: a cache key, and whether it is a session's.
    """

    key: bytes
    session: bool


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
        sessions: SessionLookup | None = None,
    ) -> None:
        self._tokens = tuple((t.sha256, Principal(t.name, t.role)) for t in tokens)
        self._lookup = lookup
        self._sessions = sessions
        self._clock = clock
        self.cacheSeconds = cacheSeconds
        self.maxEntries = maxEntries
        self._cache: dict[bytes, _Entry] = {}
        self._pending: dict[bytes, list[Deferred[_Entry | None]]] = {}
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

    def configured(self, digest: bytes) -> Principal | None:
        """
        The principal of a token of the configuration file, by its digest.
        """
        return self._configured(digest)

    def peek(self, digest: bytes) -> Principal | _Miss | None:
        """
        What is known of a digest without asking the database: its
        principal, None for no valid token, or L{MISS}.
        """
        known = self._peek(digest)
        return known if isinstance(known, _Miss) or known is None else known.principal

    def _peek(self, key: bytes) -> _Entry | _Miss | None:
        if key[:1] == _SESSION and len(key) == 33:
            if self._sessions is None:
                return None
        else:
            principal = self._configured(key)
            if principal is not None:
                return _Entry(principal, float("inf"))
            if self._lookup is None:
                return None
        entry = self._cache.get(key)
        if entry is not None:
            if entry.until > self._now():
                return entry if entry.principal is not None else None
            del self._cache[key]
        return MISS

    async def resolve(self, digest: bytes) -> Principal | None:
        """
        The principal of a digest, from the database when it must.
        """
        entry = await self._resolve(digest)
        return None if entry is None else entry.principal

    async def _resolve(self, key: bytes) -> _Entry | None:
        known = self._peek(key)
        if not isinstance(known, _Miss):
            return known
        waiters = self._pending.get(key)
        if waiters is None:
            # Concurrent requests with one token share one lookup.
            waiters = self._pending[key] = []
            Deferred.fromCoroutine(self._read(key)).addBoth(self._settle, key)
        mine: Deferred[_Entry | None] = Deferred()
        waiters.append(mine)
        return await mine

    def _settle(self, result: _Entry | Failure | None, key: bytes) -> None:
        for waiter in self._pending.pop(key, []):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _read(self, key: bytes) -> _Entry | None:
        generation = self._generation
        self.lookups += 1
        principal: Principal | None = None
        csrf: str | None = None
        ttl = self.cacheSeconds
        if key[:1] == _SESSION and len(key) == 33:
            assert self._sessions is not None
            record = await self._sessions(key[1:])
            if record is not None:
                principal = (
                    self._configured(record.configured)
                    if record.configured is not None
                    else record.principal
                )
                csrf = record.csrf
                ttl = min(ttl, record.remaining_s)
        else:
            assert self._lookup is not None
            found = await self._lookup(key)
            if found is not None:
                principal = found.principal
                if found.remaining_s is not None:
                    ttl = min(ttl, found.remaining_s)
        entry = _Entry(principal, self._now() + ttl, csrf)
        if generation == self._generation:
            if len(self._cache) >= self.maxEntries:
                self._prune()
            self._cache[key] = entry
        return entry if principal is not None else None

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

    def credential(self, request: IRequest) -> Credential:
        """
        What the request presents: its bearer token, or else (where sessions
        are kept) its session cookie.

        @raise Unauthorized: for neither, or a malformed one.
        """
        if request.getHeader(b"authorization") is not None or self._sessions is None:
            return Credential(self.presented(request), False)
        cookie = request.getCookie(SESSION_COOKIE.encode("ascii"))
        if cookie is None:
            raise Unauthorized(
                "this needs an Authorization: Bearer <token> header, or a session"
                " (POST /api/v1/session)"
            )
        try:
            text = cookie.decode("ascii")
        except UnicodeDecodeError:
            raise Unauthorized("the session is not valid; sign in again") from None
        return Credential(_SESSION + digestOf(text), True)

    def requireNow(self, request: IRequest, role: Role) -> Principal | None:
        """
        The request's principal, when known without the database (None:
        await L{require}).

        @raise Unauthorized: no valid token or session.
        @raise Forbidden: a role that is not enough, or a change made with
            a session but without its CSRF token.
        """
        credential = self.credential(request)
        known = self._peek(credential.key)
        if isinstance(known, _Miss):
            return None
        return _verified(request, credential, known, role)

    async def require(self, request: IRequest, role: Role) -> Principal:
        credential = self.credential(request)
        return _verified(request, credential, await self._resolve(credential.key), role)

    async def session(self, request: IRequest) -> tuple[Principal, str] | None:
        """
        The principal and CSRF token of the request's session; None when it
        presents a bearer token or no valid session.
        """
        try:
            credential = self.credential(request)
        except Unauthorized:
            return None
        if not credential.session:
            return None
        entry = await self._resolve(credential.key)
        if entry is None or entry.principal is None or entry.csrf is None:
            return None
        return entry.principal, entry.csrf

    def forget(self, request: IRequest) -> None:
        """
        Forget what this master read of the request's session (it ended).
        """
        try:
            self._cache.pop(self.credential(request).key, None)
        except Unauthorized:
            pass


def _verified(
    request: IRequest, credential: Credential, entry: _Entry | None, role: Role
) -> Principal:
    if credential.session:
        if entry is None or entry.principal is None:
            raise Unauthorized(
                "the session is not valid (signed out, expired, or its token revoked);"
                " sign in again"
            )
        if request.method not in _SAFE:
            sent = request.getHeader(b"x-csrf-token") or b""
            if entry.csrf is None or not hmac.compare_digest(sent, entry.csrf.encode("ascii")):
                raise Forbidden(
                    "a change made with a session needs its CSRF token in the X-CSRF-Token"
                    " header (GET /api/v1/session gives it)"
                )
    return _checked(None if entry is None else entry.principal, role)


def _checked(principal: Principal | None, role: Role) -> Principal:
    if principal is None:
        raise Unauthorized("the token is not valid (unknown, revoked or expired)")
    if not principal.may(role):
        raise Forbidden(
            f"this needs the {role.value} role; token {principal.name!r} has "
            f"{principal.role.value}",
        )
    return principal
