"""
Encoding documents, and the JSON Schemas of the declared types for the
OpenAPI and AsyncAPI documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


def encode(document: Any) -> bytes:
    """
    A document (a Struct, or plain JSON values) as JSON bytes.
    """
    return _encoder.encode(document)


def jsonSchemas(
    types: Sequence[Any], refTemplate: str = "#/components/schemas/{name}"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """
    The JSON Schema (2020-12) of each of C{types}, as references into the
    components returned beside them.
    """
    refs, components = msgspec.json.schema_components(types, ref_template=refTemplate)
    for schema in components.values():
        _noNUL(schema)
    return list(refs), dict(components)


#: No string the master takes may hold a NUL (PostgreSQL refuses it in text
#: and jsonb): said once, for every string of every document.
_NO_NUL = "^[^\\u0000]*$"


def _noNUL(schema: Any) -> None:
    if isinstance(schema, dict):
        if schema.get("type") == "string":
            if "pattern" not in schema:
                schema["pattern"] = _NO_NUL
            elif "not" not in schema:
                schema["not"] = {"pattern": "\\u0000"}
        for value in schema.values():
            _noNUL(value)
    elif isinstance(schema, list):
        for item in schema:
            _noNUL(item)
