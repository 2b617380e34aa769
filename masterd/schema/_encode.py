"""
Encoding documents, and the JSON Schemas of the declared types for the
OpenAPI and AsyncAPI documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ._types import FREE_JSON_MARK, MAX_SAFE_INTEGER, schemaRules

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
    freeJSON = refTemplate.format(name="FreeJSON")
    if _freeJSON(components, freeJSON):
        components["FreeJSON"] = _freeJSONSchema(freeJSON)
    for name, rules in schemaRules().items():
        if name in components:
            components[name] = {**components[name], **rules}
    for schema in components.values():
        _noNUL(schema)
    return list(refs), dict(components)


def _freeJSONSchema(ref: str) -> dict[str, Any]:
    """
    Any JSON value the master keeps in free-form fields (checkFreeform): what
    PostgreSQL's jsonb and every JSON reader hold exactly.
    """
    return {
        "description": "Any JSON value: numbers within ±(2^53 - 1), strings without NUL",
        "anyOf": [
            {"type": "null"},
            {"type": "boolean"},
            {"type": "number", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER},
            {"type": "string"},
            {"type": "array", "items": {"$ref": ref}},
            {
                "type": "object",
                "propertyNames": {"type": "string"},
                "additionalProperties": {"$ref": ref},
            },
        ],
    }


def _freeJSON(schema: Any, ref: str) -> bool:
    """
    Replace each free-form mark with an object of FreeJSON values; whether
    there was one.
    """
    found = False
    if isinstance(schema, dict):
        if schema.pop(FREE_JSON_MARK, False):
            schema["propertyNames"] = {"type": "string"}
            schema["additionalProperties"] = {"$ref": ref}
            found = True
        for value in schema.values():
            found = _freeJSON(value, ref) or found
    elif isinstance(schema, list):
        for item in schema:
            found = _freeJSON(item, ref) or found
    return found


#: No string the master takes may hold a NUL (PostgreSQL refuses it in text
#: and jsonb): said once, for every string of every document.
_NO_NUL = "^[^\\u0000]*$"


def _noNUL(schema: Any, names: bool = False) -> None:
    # names: the schema of an object's keys (propertyNames), a string
    # schema whether or not it says "type".
    if isinstance(schema, dict):
        if names or schema.get("type") == "string":
            if "pattern" not in schema:
                schema["pattern"] = _NO_NUL
            elif "not" not in schema:
                schema["not"] = {"pattern": "\\u0000"}
        for key, value in schema.items():
            _noNUL(value, key == "propertyNames")
    elif isinstance(schema, list):
        for item in schema:
            _noNUL(item)
