"""
Route protection over L{masterd.accounts}: C{authorized} runs a route once
its request's principal is known (at once for a token of the configuration
file or one read moments ago; after a database lookup otherwise), and the
C{requires} decorator applies it to a plain Klein route.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Coroutine, Iterable
from functools import wraps
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from masterd.accounts import Authenticator, Principal
from masterd.audit import Actor
from masterd.config import Role

__all__ = ["Authenticator", "Principal", "actorOf", "authorized", "clientAddress", "requires"]

F = TypeVar("F", bound=Callable[..., Any])


def authorized(auth: Authenticator, request: IRequest, role: Role, then: Callable[[], Any]) -> Any:
    """
    Check the request's token for C{role}, leave its principal on the
    request as C{request.principal}, then return what C{then()} returns
    (or a Deferred of it, when the token had to be looked up).
    """
    principal = auth.requireNow(request, role)
    if principal is not None:
        request.principal = principal  # type: ignore[attr-defined]
        return then()
    return Deferred.fromCoroutine(_lookedUp(auth, request, role, then))


async def _lookedUp(
    auth: Authenticator, request: IRequest, role: Role, then: Callable[[], Any]
) -> Any:
    request.principal = await auth.require(request, role)  # type: ignore[attr-defined]
    result = then()
    if isinstance(result, Deferred):
        return await result
    if isinstance(result, Coroutine):
        return await result
    return result


def requires(role: Role) -> Callable[[F], F]:
    """
    Decorate a route method of an object with an C{auth} attribute: the
    request must carry a token whose role grants C{role}.
    """

    def decorate(f: F) -> F:
        @wraps(f)
        def check(self: Any, request: IRequest, *args: Any, **kwargs: Any) -> Any:
            return authorized(self.auth, request, role, lambda: f(self, request, *args, **kwargs))

        return check  # type: ignore[return-value]

    return decorate


def clientAddress(request: IRequest, trusted: Iterable[Any] = ()) -> str | None:
    """
    The client's IP address: the peer's, or, when the peer is one of the
    C{trusted} proxies (ip_network values), the last address of
    X-Forwarded-For that is not itself a trusted proxy.
    """
    peer: str | None = getattr(request.getClientAddress(), "host", None)
    networks = tuple(trusted)
    if peer is None or not networks:
        return peer

    def isTrusted(text: str) -> bool:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        return any(address in n for n in networks)

    if not isTrusted(peer):
        return peer
    forwarded = request.getHeader(b"x-forwarded-for")
    if not forwarded:
        return peer
    hops = [h.strip() for h in forwarded.decode("latin-1").split(",") if h.strip()]
    for hop in reversed(hops):
        if not isTrusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer


def actorOf(request: IRequest, master: str, trusted: Iterable[Any] = ()) -> Actor:
    """
    Who makes this (authenticated) request, for the audit trail.
    """
    return Actor(request.principal, master, clientAddress(request, trusted))  # type: ignore[attr-defined]
