"""
Routes declared once: C{operation} registers a Klein route and records what
the OpenAPI document says of it (parameters, body, responses, role), and the
same declaration checks the request before the route runs, so the document
and the behaviour cannot drift.

A route receives its path parameters, query and body already checked, as
typed values, and returns a document (a Struct), which is encoded here with
the declared status.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, Literal, TypeVar

import msgspec
from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from masterd.config import Role
from masterd.db import DatabaseUnavailable
from masterd.errors import InvalidField, NoSuchResource
from masterd.schema import MAX_BIGINT, InputLimits, MalformedJSON, convert, decode, encode

from ._app import app
from ._auth import authorized
from ._json import APIError
from ._query import queryValues

log = Logger()

F = TypeVar("F", bound=Callable[..., Any])

_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\Z"
)

ParamKind = Literal["id", "agent", "name"]


@frozen
class PathParam:
    """
    A path segment: a database id (C{id}: ASCII digits, 1 to 2^63 - 1), an
    agent id (a UUID in ASCII) or a name. Text that cannot be one names
    nothing: 404, with C{details.field} naming the parameter.
    """

    name: str
    kind: ParamKind
    resource: str
    description: str = ""
    #: What a name must match (a regular expression) and its longest length.
    pattern: str | None = None
    maxLength: int | None = None
    #: A name that cannot be one is a 400 naming the parameter (a PUT that
    #: would create it), not a 404.
    refuse: bool = False


@frozen
class Operation:
    method: str
    path: str
    operationId: str
    summary: str
    description: str
    role: Role | None
    params: tuple[PathParam, ...]
    query: type | None
    body: type | None
    status: int
    response: Any
    errors: tuple[int, ...]
    tag: str
    contentType: str = "application/json"
    #: A user may do this only to what it owns (operators and admins to anything).
    owned: bool = False
    #: The body may be left out (it is then C{{}}).
    bodyOptional: bool = False
    #: A PUT that answers 201 (with the same document) when it created the
    #: resource, the declared status otherwise.
    createdToo: bool = False


#: Every declared operation, in declaration order: what the OpenAPI
#: document lists.
OPERATIONS: list[Operation] = []


def pathParam(param: PathParam, text: str) -> Any:
    """
    A path segment as its declared kind.
    """
    if param.kind == "id":
        if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_BIGINT:
            raise NoSuchResource(param.resource, text, field=param.name)
        value = int(text)
        if value < 1:
            raise NoSuchResource(param.resource, text, field=param.name)
        return value
    if param.kind == "agent":
        if not _UUID.match(text):
            # Text that is no agent id names no agent: 404, as for ids.
            raise NoSuchResource(param.resource, text[:45], field=param.name)
        return str(uuid.UUID(text))
    valid = "\0" not in text and (
        param.pattern is None
        or (len(text) <= (param.maxLength or len(text)) and re.fullmatch(param.pattern, text))
    )
    if not valid:
        if param.refuse:
            raise InvalidField(
                param.name,
                f"{text[:80]!r} cannot be a {param.resource}'s name"
                + (f" (it must match {param.pattern}" if param.pattern else " (no NUL")
                + (f", at most {param.maxLength} characters)" if param.maxLength else ")"),
            )
        raise NoSuchResource(param.resource, text[:80], field=param.name)
    return text


def agentID(text: str, field: str) -> str:
    """
    An agent id in its one spelling: ASCII hex, as a UUID (uuid.UUID alone
    would take Unicode digits and braces).
    """
    if not _UUID.match(text):
        raise InvalidField(field, f"must be an agent id (a UUID), not {text[:45]!r}")
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidField(field, f"must be an agent id (a UUID), not {text!r}") from None


def readBody(request: IRequest, kind: type, limits: InputLimits, optional: bool = False) -> Any:
    """
    The request body decoded as C{kind}: 415 for another content type, 400
    naming the field for anything else wrong. An C{optional} body left out
    is C{{}}.
    """
    contentType = request.getHeader(b"content-type")
    if contentType is not None and not contentType.split(b";")[0].strip().lower().endswith(b"json"):
        raise APIError(
            415,
            "unsupported_media_type",
            f"the body must be application/json, not {contentType.decode('latin-1')[:100]}",
        )
    content = request.content
    raw = b""
    if content is not None:
        content.seek(0)
        raw = content.read()
    if not raw.strip():
        if optional:
            return decode(b"{}", kind, limits)
        raise APIError(400, "invalid_json", "the request body is empty; a JSON document is needed")
    try:
        return decode(raw, kind, limits)
    except MalformedJSON as e:
        details = {"line": e.line, "column": e.column} if e.line is not None else {}
        raise APIError(400, "invalid_json", f"the request body {e.message}", details) from None


def operation(
    method: str,
    path: str,
    *,
    summary: str,
    role: Role | None,
    description: str = "",
    params: tuple[PathParam, ...] = (),
    query: type | None = None,
    body: type | None = None,
    status: int = 200,
    response: Any = None,
    errors: tuple[int, ...] = (),
    tag: str = "master",
    contentType: str = "application/json",
    database: bool = True,
    owned: bool = False,
    bodyOptional: bool = False,
    createdToo: bool = False,
) -> Callable[[F], F]:
    """
    Declare a route. C{path} is written as OpenAPI writes it
    (C{/api/v1/jobs/{jobID}}); C{response} is the document type of the
    C{status} answer (C{None} for none). The route is called with the
    checked path parameters by name, and C{query=} and C{body=} when
    declared. A route with a role that needs the C{database} answers 503
    (Retry-After) until the master is ready.
    """
    kleinPath = path.replace("{", "<").replace("}", ">")

    def decorate(f: F) -> F:
        op = Operation(
            method=method,
            path=path,
            operationId=f.__name__,
            summary=summary,
            description=description or (inspect.getdoc(f) or ""),
            role=role,
            params=params,
            query=query,
            body=body,
            status=status,
            response=response,
            errors=errors,
            tag=tag,
            contentType=contentType,
            owned=owned,
            bodyOptional=bodyOptional,
            createdToo=createdToo,
        )
        OPERATIONS.append(op)

        def run(self: Any, request: IRequest, segments: dict[str, str]) -> Any:
            if role is not None and database and not self.database.ready:
                raise DatabaseUnavailable("the master is not ready yet")
            limits: InputLimits = self.inputLimits
            args: dict[str, Any] = {p.name: pathParam(p, segments[p.name]) for p in params}
            if query is not None:
                args["query"] = convert(queryValues(request), query, limits)
            if body is not None:
                args["body"] = readBody(request, body, limits, bodyOptional)
            result = f(self, request, **args)
            if isinstance(result, Coroutine):
                return Deferred.fromCoroutine(_answer(request, result, status))
            return respond(request, result, status)

        @wraps(f)
        def check(self: Any, request: IRequest, **segments: str) -> Any:
            if role is not None:
                result = authorized(self.auth, request, role, lambda: run(self, request, segments))
            else:
                result = run(self, request, segments)
            return shielded(result) if isinstance(result, Deferred) else result

        app.route(kleinPath, methods=[method])(check)
        return check  # type: ignore[return-value]

    return decorate


def shielded(work: Deferred[Any]) -> Deferred[Any]:
    """
    What Klein waits for instead of C{work}. Klein cancels a route's
    Deferred when its client goes away; cancelling would cut the work off
    in the middle of a database query, which txpostgres cannot do cleanly
    (its canceller raises), and leave a change half-made from the client's
    view. So the work runs to its end, and only the wait is cancelled.
    """
    waiting: Deferred[Any] = Deferred()

    def finished(result: Any) -> None:
        if not waiting.called:
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(result)
        elif isinstance(result, Failure) and not result.check(CancelledError):
            log.failure("a request failed after its client went away", result)

    work.addBoth(finished)
    return waiting


async def _answer(request: IRequest, result: Coroutine[Any, Any, Any], status: int) -> Any:
    return respond(request, await result, status)


def respond(request: IRequest, document: Any, status: int) -> Any:
    """
    Encode what a route returned: a document with the declared status,
    bytes (already encoded, headers set by the route) as they are.
    """
    if isinstance(document, bytes) or not _isDocument(document):
        return document
    request.setResponseCode(status)
    if status == 204:
        return b""
    body = encode(document)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % (len(body),))
    return body


def _isDocument(value: Any) -> bool:
    return value is None or isinstance(value, msgspec.Struct | dict | list)
