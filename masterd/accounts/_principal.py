"""
Who a request or an agent is: a principal (a user name with a role), and
what each role may also act as.
"""

from __future__ import annotations

from attrs import frozen

from masterd.config import Role
from masterd.errors import Forbidden

#: What each role may also act as.
_GRANTS: dict[Role, frozenset[Role]] = {
    Role.viewer: frozenset({Role.viewer}),
    Role.user: frozenset({Role.viewer, Role.user}),
    Role.operator: frozenset({Role.viewer, Role.user, Role.operator}),
    Role.admin: frozenset(Role),
    Role.agent: frozenset({Role.agent}),
}


@frozen
class Principal:
    """
    A token's holder. C{name} is the user name (for a token of the
    configuration file, its entry's name); C{tokenID} is the database
    token's id, C{None} for a configuration token.
    """

    name: str
    role: Role
    tokenID: int | None = None

    def may(self, role: Role) -> bool:
        return role in _GRANTS[self.role]

    def mayChange(self, owner: str) -> bool:
        """
        Whether this principal may change, cancel, retry or delete
        something C{owner} owns: its own things as a user, anyone's as an
        operator or admin.
        """
        if self.may(Role.operator):
            return True
        return self.may(Role.user) and owner == self.name

    def checkOwner(self, kind: str, ident: object, owner: str) -> None:
        """
        @raise Forbidden: naming the owner, unless L{mayChange}.
        """
        if not self.mayChange(owner):
            raise Forbidden(
                f"{kind} {ident} belongs to {owner!r}; only its owner, an operator or an "
                f"admin may change it",
                owner=owner,
            )
