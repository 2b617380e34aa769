"""
Sessions over HTTP, for the dashboard: a token exchanged for an HttpOnly,
SameSite=Strict cookie (Secure under TLS) at C{POST /api/v1/session}, read
back with C{GET}, ended with C{DELETE} (docs/http-api.md, "Sessions").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.web.iweb import IRequest

from masterd.accounts import SESSION_COOKIE, Authenticator, SessionStore, digestOf
from masterd.accounts.models import SessionCreate, SessionDocument
from masterd.audit import Actor, record
from masterd.config import Role
from masterd.db import Pool, Transaction
from masterd.errors import Forbidden, NoSuchResource, Unauthorized
from masterd.events import EventBus, TokensChanged

from ._auth import clientAddress
from ._operations import operation

HREF = "/api/v1/session"


def secure(request: IRequest, trusted: tuple[Any, ...]) -> bool:
    """
    Whether the browser reached us over TLS: directly, or through a trusted
    proxy that says so (X-Forwarded-Proto).
    """
    if request.isSecure():
        return True
    peer = getattr(request.getClientAddress(), "host", None)
    try:
        behind = peer is not None and any(ipaddress.ip_address(peer) in n for n in trusted)
    except ValueError:
        behind = False
    proto = request.getHeader(b"x-forwarded-proto") or b""
    return behind and proto.split(b",")[0].strip().lower() == b"https"


def _cookie(value: str, maxAge: int, tls: bool) -> bytes:
    parts = [f"{SESSION_COOKIE}={value}", "Path=/", f"Max-Age={maxAge}", "HttpOnly",
             "SameSite=Strict"]  # fmt: skip
    if tls:
        parts.append("Secure")
    return "; ".join(parts).encode("ascii")


class SessionRoutes:
    """
    A mixin of L{MasterAPI}.
    """

    auth: Authenticator
    pool: Pool | None
    sessions: SessionStore | None
    events: EventBus | None
    sessionLifetime_s: float
    trustedProxies: tuple[Any, ...]
    name: str
    actor: Callable[[IRequest], Actor]

    def _sessionStore(self) -> tuple[Pool, SessionStore]:
        assert self.pool is not None and self.sessions is not None
        return self.pool, self.sessions

    @operation("POST", HREF, summary="Sign in: a token exchanged for a session cookie",
               role=None, body=SessionCreate, status=201, response=SessionDocument,
               errors=(401, 403), tag="accounts",
               description="Sets an HttpOnly, SameSite=Strict cookie (Secure under TLS) that "
               "authenticates the requests of the dashboard on any master. A change made with "
               "it (POST, PUT, PATCH, DELETE) also needs the answer's csrf_token in the "
               "X-CSRF-Token header. The session lasts auth.session_hours, and ends sooner "
               "when its token is revoked or expires. Agent tokens cannot sign in.")  # fmt: skip
    async def signIn(self, request: IRequest, body: SessionCreate) -> SessionDocument:
        pool, sessions = self._sessionStore()
        digest = digestOf(body.token.strip())
        principal = await self.auth.resolve(digest)
        if principal is None:
            raise Unauthorized("the token is not valid (unknown, revoked or expired)")
        if principal.role is Role.agent:
            raise Forbidden("an agent's token cannot sign in; use a viewer's, user's, "
                            "operator's or admin's")  # fmt: skip
        actor = Actor(principal, self.name, clientAddress(request, self.trustedProxies))

        async def work(txn: Transaction) -> Any:
            opened = await sessions.open(
                txn, principal, digest, self.sessionLifetime_s, actor.address
            )
            record(txn, actor, "session.create", HREF, {"expires_at": opened.expires_at})
            return opened

        opened = await pool.transaction(work)
        tls = secure(request, self.trustedProxies)
        request.setHeader(b"set-cookie", _cookie(opened.secret, int(self.sessionLifetime_s), tls))
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"location", HREF.encode("ascii"))
        return SessionDocument(
            href=HREF, user=principal.name, role=principal.role.value,
            csrf_token=opened.csrf, expires_at=opened.expires_at,
        )  # fmt: skip

    @operation("GET", HREF, summary="Who is signed in, and the session's CSRF token",
               role=Role.viewer, response=SessionDocument, tag="accounts",
               description="With a bearer token instead of a session, csrf_token and "
               "expires_at are null.")  # fmt: skip
    async def getSession(self, request: IRequest) -> SessionDocument:
        _, sessions = self._sessionStore()
        principal = request.principal  # type: ignore[attr-defined]
        request.setHeader(b"cache-control", b"no-store")
        found = await self.auth.session(request)
        if found is None:
            return SessionDocument(href=HREF, user=principal.name, role=principal.role.value,
                                   csrf_token=None, expires_at=None)  # fmt: skip
        cookie = request.getCookie(SESSION_COOKIE.encode("ascii")) or b""
        expires = await sessions.expiry(digestOf(cookie.decode("ascii")))
        return SessionDocument(href=HREF, user=principal.name, role=principal.role.value,
                               csrf_token=found[1], expires_at=expires)  # fmt: skip

    @operation("DELETE", HREF, summary="Sign out: the session ends on every master",
               role=Role.viewer, status=204, errors=(404,), tag="accounts",
               description="Needs the session's X-CSRF-Token. 404 for a request that "
               "presents a bearer token instead of a session.")  # fmt: skip
    async def signOut(self, request: IRequest) -> None:
        pool, sessions = self._sessionStore()
        if await self.auth.session(request) is None:
            raise NoSuchResource("session", "(this request presents a bearer token)")
        cookie = (request.getCookie(SESSION_COOKIE.encode("ascii")) or b"").decode("ascii")
        actor = self.actor(request)
        events = self.events

        async def work(txn: Transaction) -> None:
            await sessions.end(txn, digestOf(cookie))
            record(txn, actor, "session.delete", HREF)
            if events is not None:
                # Every master forgets what it read of sessions and tokens.
                await events.announce(txn, TokensChanged(0))

        await pool.transaction(work)
        self.auth.forget(request)
        request.setHeader(b"set-cookie", _cookie("", 0, secure(request, self.trustedProxies)))
