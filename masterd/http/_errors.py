"""
The error handlers every Klein application of the master installs, so that
every error is JSON: C{{"error", "message", "details"}}, never an HTML page,
never a traceback.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from masterd.db import DatabaseUnavailable
from masterd.errors import (
    Conflict,
    Forbidden,
    InvalidField,
    NoSuchResource,
    Unauthorized,
    Unprocessable,
)

from ._json import APIError, badRequest, errorResponse
from ._request import UNMATCHED


def _apiError(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, APIError)
    return errorResponse(request, error)


def _invalidField(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, InvalidField)
    refused = badRequest(error.field, error.message)
    if isinstance(error, Unprocessable):
        refused = APIError(422, refused.code, refused.message, refused.details)
    return errorResponse(request, refused)


def _noSuchResource(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, NoSuchResource)
    details = {"kind": error.kind, "id": str(error.ident)[:200]}
    if error.field is not None:
        details["field"] = error.field
    message = str(error) if len(str(error)) < 300 else f"no {error.kind} {details['id']}..."
    return errorResponse(request, APIError(404, "not_found", message, details))


def _conflict(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, Conflict)
    return errorResponse(request, APIError(409, "conflict", error.message, error.details))


def _unauthorized(self: Any, request: IRequest, failure: Failure) -> bytes:
    return errorResponse(
        request,
        APIError(
            401,
            "unauthorized",
            str(failure.value),
            headers={b"www-authenticate": b'Bearer realm="masterd"'},
        ),
    )


def _forbidden(self: Any, request: IRequest, failure: Failure) -> bytes:
    details = getattr(failure.value, "details", None) or {}
    return errorResponse(request, APIError(403, "forbidden", str(failure.value), details))


def _databaseUnavailable(self: Any, request: IRequest, failure: Failure) -> bytes:
    request.setHeader(b"retry-after", b"5")
    return errorResponse(
        request,
        APIError(503, "database_unavailable", f"try again shortly: {failure.value}"),
    )


def _notFound(self: Any, request: IRequest, failure: Failure) -> bytes:
    request.route = UNMATCHED  # type: ignore[attr-defined]
    path = request.path.decode("utf-8", "replace")
    return errorResponse(request, APIError(404, "not_found", f"no such resource: {path}"))


def _methodNotAllowed(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, MethodNotAllowed)
    allowed = sorted(error.valid_methods or [])
    method = request.method.decode("ascii", "replace")
    return errorResponse(
        request,
        APIError(
            405,
            "method_not_allowed",
            f"{method} is not allowed here; use {', '.join(allowed)}",
            {"allowed": allowed},
            headers={b"allow": ", ".join(allowed).encode("ascii")},
        ),
    )


def _unhandled(self: Any, request: IRequest, failure: Failure) -> bytes:
    request.recordException(failure)  # type: ignore[attr-defined]
    return errorResponse(
        request, APIError(500, "internal_error", "the master failed to handle this request")
    )


def installErrorHandlers(app: Klein) -> None:
    """
    Register the JSON error handlers on C{app}; the catch-all comes last.
    """
    app.handle_errors(APIError)(_apiError)
    app.handle_errors(Unauthorized)(_unauthorized)
    app.handle_errors(Forbidden)(_forbidden)
    app.handle_errors(InvalidField)(_invalidField)
    app.handle_errors(NoSuchResource)(_noSuchResource)
    app.handle_errors(Conflict)(_conflict)
    app.handle_errors(DatabaseUnavailable)(_databaseUnavailable)
    app.handle_errors(NotFound)(_notFound)
    app.handle_errors(MethodNotAllowed)(_methodNotAllowed)
    app.handle_errors(Exception)(_unhandled)
