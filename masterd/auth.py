"""
Bearer tokens and roles.

Only SHA-256 digests of tokens are held; a presented token is hashed and
compared with every configured digest in constant time, so neither the
comparison nor the position of the match leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from attrs import frozen
from twisted.web.iweb import IRequest

from masterd.config import Role, TokenConfig
from masterd.errors import Forbidden, Unauthorized

#: What each role may also act as.
_GRANTS: dict[Role, frozenset[Role]] = {
    Role.viewer: frozenset({Role.viewer}),
    Role.operator: frozenset({Role.viewer, Role.operator}),
    Role.admin: frozenset(Role),
    Role.agent: frozenset({Role.agent}),
}


@frozen
class Principal:
    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return role in _GRANTS[self.role]


class Authenticator:
    def __init__(self, tokens: Iterable[TokenConfig]) -> None:
        self._tokens = tuple((t.sha256, Principal(t.name, t.role)) for t in tokens)

    def identify(self, token: str) -> Principal | None:
        """
        The principal a token belongs to, if any. Every configured digest is
        compared, whichever matches.
        """
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found: Principal | None = None
        for candidate, principal in self._tokens:
            if hmac.compare_digest(digest, candidate):
                found = principal
        return found

    def authenticate(self, request: IRequest) -> Principal:
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
        principal = self.identify(text)
        if principal is None:
            raise Unauthorized("the token is not valid")
        return principal

    def require(self, request: IRequest, role: Role) -> Principal:
        principal = self.authenticate(request)
        if not principal.may(role):
            raise Forbidden(
                f"this needs the {role.value} role; token {principal.name!r} has "
                f"{principal.role.value}",
            )
        return principal
