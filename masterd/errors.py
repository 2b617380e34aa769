"""
Errors of the domain, free of HTTP; the HTTP layer maps each to its status
(and the talkback layer to an error message).
"""

from __future__ import annotations

from typing import Any


def jsonType(value: object) -> str:
    """
    What a JSON value is, for a message about a wrong one: "a string".
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class InvalidField(ValueError):
    """
    A client sent a bad value; C{field} names it, dotted (C{requirements.cpus},
    C{tasks[3].frames}). Answered 400.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Unprocessable(InvalidField):
    """
    A value that fits the published schema but that the master cannot take:
    a frame range that runs backwards, more frames than
    C{limits.max_frames_per_job}, free-form JSON nested deeper than
    C{limits.max_json_depth}. Answered 422, so that a client can tell a
    request the schema would have refused (400) from one only the master
    could judge.
    """


class NoSuchResource(LookupError):
    """
    The thing asked for does not exist. Answered 404.
    """

    def __init__(self, kind: str, ident: Any, field: str | None = None) -> None:
        super().__init__(f"no {kind} {ident}")
        self.kind = kind
        self.ident = ident
        #: The path parameter that named it, when it could name nothing.
        self.field = field


class Unauthorized(Exception):
    """
    No credentials, or credentials that are not valid. Answered 401.
    """


class Forbidden(Exception):
    """
    Valid credentials whose role is not enough, or a job that is another
    user's. Answered 403, with C{details} (the owner, for instance).
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class Conflict(Exception):
    """
    The request is well formed but the resource's state refuses it (an
    illegal state transition, deleting a job that still runs). Answered 409.
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
