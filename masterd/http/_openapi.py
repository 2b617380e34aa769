"""
The OpenAPI 3.1 document of every declared operation and the AsyncAPI 3.0
document of the talkback channel, both built from the same declarations
that check requests and messages (so neither can drift from the code).
"""

from __future__ import annotations

from typing import Any

import msgspec

from masterd.schema import MAX_BIGINT, Document, jsonSchemas
from masterd.talkback import messages

from ._operations import OPERATIONS, Operation, PathParam


class ErrorDocument(Document):
    """
    Every error, from every route and from no route at all.
    """

    error: str
    message: str
    details: dict[str, Any]


_UUID_PATTERN = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"

_ERRORS = {
    400: "The request is malformed: invalid_json, or invalid_field naming the field in "
    "details.field",
    401: "No valid token (WWW-Authenticate: Bearer)",
    403: "The token's role may not do this, or (x-masterd-ownership) the job is another "
    "user's (details.owner)",
    404: "No such resource (details.kind, details.id)",
    409: "The resource's state refuses the change (details.state)",
    413: "The body is larger than limits.max_body_bytes",
    422: "The request fits this document's schema but breaks a rule it cannot state (a frame "
    "range that runs backwards, more frames than limits.max_frames_per_job, free-form JSON "
    "nested deeper than limits.max_json_depth): invalid_field naming the field",
    415: "The body is not application/json",
    500: "A bug in the master, logged and counted; never a traceback",
    503: "The database is unavailable (Retry-After)",
}


def _errors(op: Operation) -> list[int]:
    codes = set(op.errors)
    if op.params or op.query is not None or op.body is not None:
        codes.add(400)
    if op.params:
        codes.add(404)
    if op.role is not None:
        codes |= {401, 403, 503}
    if op.body is not None:
        codes |= {413, 415}
    codes.add(500)
    return sorted(codes - {op.status})


#: One event of a Server-Sent Events stream, as its fields (the schema of
#: each event, as tools that read event streams apply it).
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {
            "type": "string",
            "enum": ["hello", "job", "agent", "agents", "limit", "master", "audit"],
        },
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["data"],
}


def _paramSchema(param: PathParam) -> dict[str, Any]:
    if param.kind == "id":
        return {"type": "integer", "minimum": 1, "maximum": MAX_BIGINT}
    if param.kind == "agent":
        return {"type": "string", "format": "uuid", "pattern": _UUID_PATTERN}
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if param.pattern is not None:
        schema["pattern"] = param.pattern
    if param.maxLength is not None:
        schema["maxLength"] = param.maxLength
    return schema


def _queryParameters(kind: type, components: dict[str, Any]) -> list[dict[str, Any]]:
    (ref,), found = jsonSchemas([kind])
    schema = found.pop(ref["$ref"].rsplit("/", 1)[1])
    components.update(found)
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": _nullFree(prop),
        }
        for name, prop in schema.get("properties", {}).items()
    ]


def _nullFree(schema: dict[str, Any]) -> dict[str, Any]:
    """
    A query parameter is left out rather than sent as null.
    """
    options = schema.get("anyOf")
    if options:
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            merged.update(rest[0])
            schema = merged
    if schema.get("default", 0) is None:
        schema = {k: v for k, v in schema.items() if k != "default"}
    return schema


def openAPIDocument(version: str) -> dict[str, Any]:
    types: list[Any] = [ErrorDocument]
    for op in OPERATIONS:
        if op.body is not None:
            types.append(op.body)
        if op.response is not None and op.response is not str:
            types.append(op.response)
    refs, components = jsonSchemas(types)
    schemaOf = {id(t): r for t, r in zip(types, refs, strict=True)}
    errorRef = schemaOf[id(ErrorDocument)]
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        parameters = [
            {
                "name": p.name,
                "in": "path",
                "required": True,
                "description": p.description,
                "schema": _paramSchema(p),
            }
            for p in op.params
        ]
        if op.query is not None:
            parameters += _queryParameters(op.query, components)
        responses: dict[str, Any] = {}
        success: dict[str, Any] = {"description": op.summary}
        if op.response is str and op.contentType == "text/event-stream":
            success["content"] = {op.contentType: {"schema": _SSE_EVENT}}
        elif op.response is str:
            success["content"] = {op.contentType: {"schema": {"type": "string"}}}
        elif op.response is not None:
            success["content"] = {op.contentType: {"schema": schemaOf[id(op.response)]}}
        responses[str(op.status)] = success
        if op.createdToo:
            responses["201"] = {**success, "description": f"{op.summary}: created"}
        for code in _errors(op):
            responses[str(code)] = {
                "description": _ERRORS.get(code, "An error"),
                "content": {"application/json": {"schema": errorRef}},
            }
        entry: dict[str, Any] = {
            "operationId": op.operationId,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": responses,
            "security": [{"bearer": []}] if op.role is not None else [],
        }
        if op.role is not None:
            entry["x-masterd-role"] = op.role.value
            entry["x-masterd-ownership"] = op.owned
        if op.description:
            entry["description"] = op.description
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            entry["requestBody"] = {
                "required": not op.bodyOptional,
                "content": {"application/json": {"schema": schemaOf[id(op.body)]}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "masterd",
            "version": version,
            "description": "The master daemon of a render farm: jobs, tasks, agents. "
            "Times are ISO 8601 UTC with a Z; resources refer to each other by href. "
            "See docs/http-api.md.",
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": t}
            for t in ("master", "jobs", "agents", "talkback", "accounts", "audit", "webhooks")
        ],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from auth.tokens or POST /api/v1/tokens; "
                    "x-masterd-role on each operation names the least role it needs "
                    "(viewer < user < operator < admin; agent for talkback only); "
                    "x-masterd-ownership says whether a user may act only on the jobs it "
                    "owns (operators and admins act on any).",
                }
            },
        },
    }


def asyncAPIDocument(version: str) -> dict[str, Any]:
    """
    The talkback channel: every message in both directions.
    """
    inbound, outbound = messages.INBOUND, messages.OUTBOUND
    refs, schemas = jsonSchemas([*inbound, *outbound], refTemplate="#/components/schemas/{name}")
    names: dict[str, dict[str, Any]] = {}
    for kind, ref in zip([*inbound, *outbound], refs, strict=True):
        tag = msgspec.inspect.type_info(kind).tag  # type: ignore[attr-defined]
        names[f"{tag}" if kind in inbound else f"{tag}_out"] = {
            "name": tag,
            "title": tag,
            "summary": (kind.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
            "contentType": "application/json",
            "payload": {
                "schemaFormat": "application/schema+json;version=draft-2020-12",
                "schema": ref,
            },
        }
    channelMessages = {n: {"$ref": f"#/components/messages/{n}"} for n in names}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "masterd talkback",
            "version": version,
            "description": "The agents' WebSocket channel: JSON text messages with a type "
            "field. See docs/talkback.md for the close codes and the order of things.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "talkback": {
                "address": "/api/v1/talkback",
                "messages": channelMessages,
                "bindings": {"ws": {"method": "GET"}},
            }
        },
        "operations": {
            "fromAgent": {
                "action": "receive",
                "channel": {"$ref": "#/channels/talkback"},
                "summary": "What an agent sends the master",
                "messages": [
                    {"$ref": f"#/channels/talkback/messages/{n}"}
                    for n in names
                    if not n.endswith("_out")
                ],
            },
            "toAgent": {
                "action": "send",
                "channel": {"$ref": "#/channels/talkback"},
                "summary": "What the master sends an agent",
                "messages": [
                    {"$ref": f"#/channels/talkback/messages/{n}"}
                    for n in names
                    if n.endswith("_out")
                ],
            },
        },
        "components": {"messages": names, "schemas": schemas},
    }
