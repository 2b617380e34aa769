"""
Accounts: who holds a token (a principal with a role), the tokens kept in
the database, and how a request's token is checked.
"""

from ._authenticator import MISS, Authenticator, Found, Lookup, digestOf
from ._principal import Principal
from ._tokens import TokenStore

__all__ = [
    "MISS",
    "Authenticator",
    "Found",
    "Lookup",
    "Principal",
    "TokenStore",
    "digestOf",
]
