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
    return list(refs), dict(components)
