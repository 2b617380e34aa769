"""
The one schema layer: every request body, query, response body and
talkback message is declared once, as a msgspec Struct (docs/architecture.md
says why msgspec), and validation, encoding and the OpenAPI and AsyncAPI
documents all come from those declarations.
"""

from ._decode import DEFAULT_LIMITS, InputLimits, MalformedJSON, checkFreeform, convert, decode
from ._encode import encode, jsonSchemas
from ._paths import printable
from ._types import (
    MAX_BIGINT,
    MAX_INT,
    MAX_SAFE_INTEGER,
    UNSET,
    AgentId,
    Attempt,
    Document,
    FreeObject,
    Id,
    Meta,
    Model,
    Name,
    PageLimit,
    Tag,
    Text1K,
    Text10K,
    Text100K,
    Time,
    Title,
    Unset,
)

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_BIGINT",
    "MAX_INT",
    "MAX_SAFE_INTEGER",
    "UNSET",
    "AgentId",
    "Attempt",
    "Document",
    "FreeObject",
    "Id",
    "InputLimits",
    "MalformedJSON",
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
    "checkFreeform",
    "convert",
    "decode",
    "encode",
    "jsonSchemas",
    "printable",
]
