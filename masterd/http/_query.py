"""
Query-string parameters, checked: a bad one is a 400 that names it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from twisted.web.iweb import IRequest

from masterd.errors import InvalidField

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def queryValues(request: IRequest) -> dict[str, str]:
    """
    The query string as text, each parameter once (an empty value is a
    value: C{?limit=} is refused as C{limit} is).
    """
    args: dict[bytes, list[bytes]] = request.args or {}
    values: dict[str, str] = {}
    for rawName, given in args.items():
        try:
            name = rawName.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidField("(query)", "has a parameter name that is not UTF-8") from None
        if len(given) > 1:
            raise InvalidField(name, "is given more than once")
        try:
            text = given[0].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidField(name, "is not UTF-8") from None
        values[name] = text
    return values


def nextHref(path: str, params: dict[str, Any], after: Any) -> str:
    """
    The href of the next page: the same filters, with C{after} moved on.
    """
    query = {k: v for k, v in params.items() if v is not None}
    query["after"] = after
    return f"{path}?{urlencode(query)}"
