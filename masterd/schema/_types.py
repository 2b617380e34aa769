"""
The base classes and constrained types every declared body and message is
built from: a constraint written here is checked on input and shown in the
OpenAPI and AsyncAPI documents, from the one declaration.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

#: The largest integer JSON interchange keeps exactly (I-JSON, RFC 7493):
#: free-form numbers (job metadata) must stay within it.
MAX_SAFE_INTEGER = 2**53 - 1
#: PostgreSQL's bigint and integer.
MAX_BIGINT = 2**63 - 1
MAX_INT = 2**31 - 1


class Model(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """
    A body or message a client sends: unknown fields are refused.

    C{__freeform__} names the attributes that hold free-form JSON (job
    metadata): their depth, numbers and strings are checked after decoding,
    since no type can say what they hold.

    C{__schema_rules__} is JSON Schema that no field's type states (which
    fields go together), added to the model's published schema; the model's
    own checks enforce the same rules.
    """

    __freeform__: ClassVar[tuple[str, ...]] = ()
    __schema_rules__: ClassVar[dict[str, Any] | None] = None


def schemaRules() -> dict[str, dict[str, Any]]:
    """
    The C{__schema_rules__} of every model, by its schema name.
    """
    found: dict[str, dict[str, Any]] = {}
    pending: list[type] = [Model]
    while pending:
        kind = pending.pop()
        pending.extend(kind.__subclasses__())
        rules = getattr(kind, "__schema_rules__", None)
        if rules:
            found[kind.__name__] = rules
    return found


class Document(msgspec.Struct, kw_only=True):
    """
    A document the master sends: a response body or an outgoing message.
    """


def _text(
    limit: int, minimum: int = 0, description: str | None = None, pattern: str | None = None
) -> Any:
    return Annotated[
        str, Meta(min_length=minimum, max_length=limit, description=description, pattern=pattern)
    ]


#: A database id (bigint, from 1).
Id = Annotated[int, Meta(ge=1, le=MAX_BIGINT)]
#: An attempt number, a count: PostgreSQL integer, from 1.
Attempt = Annotated[int, Meta(ge=1, le=MAX_INT)]
#: An agent id.
AgentId = Annotated[str, Meta(description="An agent id, a UUID", min_length=1, max_length=36)]

#: A title: something to read, not only white space.
Title = _text(500, 1, pattern=r"\S")
Name = _text(255, 1)
Text1K = _text(1000)
Text10K = _text(10_000)
Text100K = _text(100_000)
Tag = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"\S")]

#: Marks a free-form object in a schema; the schema layer replaces the mark
#: with the FreeJSON component (see _encode), which no Meta can refer to.
FREE_JSON_MARK = "x-masterd-free-json"
#: Free-form JSON: an object of any JSON values, checked by checkFreeform.
FreeObject = Annotated[
    dict[str, Any],
    Meta(
        description="Free-form JSON, kept as given: numbers within ±(2^53 - 1), no NUL, "
        "nested at most limits.max_json_depth deep",
        extra_json_schema={FREE_JSON_MARK: True},
    ),
]

#: How many items a page holds, in a query (C{?limit=}).
PageLimit = Annotated[int, Meta(ge=1, le=500)]
#: A query parameter is given or not: never null (msgspec would read the
#: text "null" as one).
Unset = msgspec.UnsetType
UNSET: Any = msgspec.UNSET

#: A time, ISO 8601 in UTC with a Z.
Time = Annotated[str, Meta(description="ISO 8601 UTC, e.g. 2026-11-28T22:50:18.123Z")]

__all__ = [
    "FREE_JSON_MARK",
    "MAX_BIGINT",
    "MAX_INT",
    "MAX_SAFE_INTEGER",
    "UNSET",
    "AgentId",
    "Attempt",
    "Document",
    "FreeObject",
    "Id",
    "Meta",
    "Model",
    "Name",
    "PageLimit",
    "Tag",
    "Text1K",
    "Text10K",
    "Text100K",
    "Time",
    "Title",
    "Unset",
]
