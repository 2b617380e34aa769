"""
Accounts: who holds a token (a principal with a role), the tokens kept in
the database, and how a request's token is checked.
"""

from ._authenticator import (
    MISS,
    SESSION_COOKIE,
    Authenticator,
    Found,
    Lookup,
    SessionRecord,
    digestOf,
)
from ._principal import Principal
from ._sessions import SessionStore
from ._tokens import TokenStore

__all__ = [
    "MISS",
    "SESSION_COOKIE",
    "Authenticator",
    "Found",
    "Lookup",
    "Principal",
    "SessionRecord",
    "SessionStore",
    "TokenStore",
    "digestOf",
]
