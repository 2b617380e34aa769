"""
Route protection: the C{requires} decorator over L{masterd.auth}.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from twisted.web.iweb import IRequest

from masterd.auth import Authenticator, Principal
from masterd.config import Role

__all__ = ["Authenticator", "Principal", "requires"]

F = TypeVar("F", bound=Callable[..., Any])


def requires(role: Role) -> Callable[[F], F]:
    """
    Decorate a route method of an object with an C{auth} attribute: the
    request must carry a token whose role grants C{role}. The principal is
    left on the request as C{request.principal}.
    """

    def decorate(f: F) -> F:
        @wraps(f)
        def check(self: Any, request: IRequest, *args: Any, **kwargs: Any) -> Any:
            request.principal = self.auth.require(request, role)  # type: ignore[attr-defined]
            return f(self, request, *args, **kwargs)

        return check  # type: ignore[return-value]

    return decorate
