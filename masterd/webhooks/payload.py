"""
What a receiver gets: the payload (built the same way on every try and by
every master, from the stored event), its bytes and their signature.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

import orjson

from masterd._time import isotime
from masterd._version import __version__

USER_AGENT = f"masterd/{__version__}"


def payload(
    deliveryID: str, kind: str, at: datetime, master: str, data: dict[str, Any]
) -> dict[str, Any]:
    """
    The JSON document posted for one delivery of an event.
    """
    return {"id": deliveryID, "event": kind, "at": isotime(at), "master": master, "data": data}


def encode(document: dict[str, Any]) -> bytes:
    """
    The exact bytes posted (and signed). The event's data comes back from
    jsonb with its keys in jsonb's own order, so a retry, from this master
    or another, posts the same bytes.
    """
    return orjson.dumps(document)


def sign(secret: str, body: bytes) -> str:
    """
    The X-Masterd-Signature header's value: C{sha256=} and the hex HMAC-SHA256
    of the body with the webhook's secret.
    """
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """
    What a receiver does (docs/http-api.md has the same in a few lines):
    compare in constant time.
    """
    return hmac.compare_digest(sign(secret, body), header)


def headers(kind: str, deliveryID: str, signature: str) -> dict[bytes, list[bytes]]:
    return {
        b"Content-Type": [b"application/json"],
        b"User-Agent": [USER_AGENT.encode("ascii")],
        b"X-Masterd-Event": [kind.encode("ascii")],
        b"X-Masterd-Delivery": [deliveryID.encode("ascii")],
        b"X-Masterd-Signature": [signature.encode("ascii")],
    }
