"""
Query-string parameters, checked: a bad one is a 400 that names it.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def queryText(request: IRequest, name: str) -> str | None:
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name.encode("ascii"))
    if not values:
        return None
    if len(values) > 1:
        raise InvalidField(name, "is given more than once")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidField(name, "is not UTF-8") from None


def queryInt(
    request: IRequest, name: str, default: int | None, lo: int, hi: int = 2**63 - 1
) -> int | None:
    text = queryText(request, name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidField(name, f"must be an integer, not {text!r}") from None
    if not lo <= value <= hi:
        raise InvalidField(name, f"must be between {lo} and {hi}, not {value}")
    return value


def queryChoice(request: IRequest, name: str, choices: Iterable[str]) -> str | None:
    text = queryText(request, name)
    if text is None or text == "":
        return None
    allowed = list(choices)
    if text not in allowed:
        raise InvalidField(name, f"must be one of {', '.join(allowed)}, not {text!r}")
    return text


def queryLimit(request: IRequest) -> int:
    limit = queryInt(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    assert limit is not None
    return limit


def nextHref(path: str, params: dict[str, Any], after: Any) -> str:
    """
    The href of the next page: the same filters, with C{after} moved on.
    """
    query = {k: v for k, v in params.items() if v is not None}
    query["after"] = after
    return f"{path}?{urlencode(query)}"
