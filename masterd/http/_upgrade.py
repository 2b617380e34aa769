"""
The talkback WebSocket upgrade, answered directly.

Twisted's L{twisted.web.websocket.WebSocketResource} hands the request's
headers to wsproto's C{H11Handshake}, which parses the request a second
time with h11 and builds its 101 response through h11 again: about a sixth
of a master's CPU while 10,000 agents reconnect at once. The request was
already parsed by twisted.web; this resource checks what RFC 6455 asks of
an opening handshake from its headers and writes the fixed response itself,
then hands the connection to the same wire protocol and the same wsproto
connection Twisted's resource would (no extension, no subprotocol: the
talkback protocol uses neither).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

# Private, but the one wire protocol Twisted's own resource uses: a
# WebSocket here behaves exactly as one upgraded by WebSocketResource.
from twisted.web._websocket_impl import _WebSocketWireProtocol, serverBootstrap
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.websocket import WebSocketServerFactory
from wsproto.connection import Connection, ConnectionType

from ._json import APIError, errorResponse

#: RFC 6455 section 1.3.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def acceptToken(key: bytes) -> bytes:
    """
    The Sec-WebSocket-Accept value for a Sec-WebSocket-Key.
    """
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def _tokens(request: Any, name: bytes) -> set[bytes]:
    values = request.requestHeaders.getRawHeaders(name) or []
    return {token.strip().lower() for value in values for token in value.split(b",")}


def handshakeProblem(request: Any) -> str | None:
    """
    What is wrong with a WebSocket opening handshake, or None.
    """
    if request.clientproto != b"HTTP/1.1":
        return "a WebSocket handshake needs HTTP/1.1"
    if b"websocket" not in _tokens(request, b"upgrade"):
        return "Upgrade: websocket is needed"
    if b"upgrade" not in _tokens(request, b"connection"):
        return "Connection: Upgrade is needed"
    if _tokens(request, b"sec-websocket-version") != {b"13"}:
        return "Sec-WebSocket-Version: 13 is needed"
    keys = request.requestHeaders.getRawHeaders(b"sec-websocket-key") or []
    if len(keys) != 1:
        return "one Sec-WebSocket-Key is needed"
    try:
        if len(base64.b64decode(keys[0].strip(), validate=True)) != 16:
            return "Sec-WebSocket-Key must be 16 bytes in base64"
    except (binascii.Error, ValueError):
        return "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


class TalkbackResource(Resource):
    """
    Upgrades C{GET /api/v1/talkback} to a WebSocket of C{factory}'s
    protocol; a request that is not a valid opening handshake gets a 400
    JSON error like every other error here.
    """

    isLeaf = True

    def __init__(self, factory: WebSocketServerFactory[Any]) -> None:
        super().__init__()
        self.factory = factory

    def render_GET(self, request: Any) -> bytes | int:
        problem = handshakeProblem(request)
        if problem is not None:
            error = APIError(
                400,
                "websocket_handshake",
                f"the WebSocket handshake is not valid: {problem}",
            )
            return errorResponse(request, error)
        key = request.requestHeaders.getRawHeaders(b"sec-websocket-key")[0].strip()
        protocol = self.factory.buildProtocol(request)
        transport = request.channel.transport
        wire = _WebSocketWireProtocol(Connection(ConnectionType.SERVER), serverBootstrap, protocol)
        request.channel._protocolUpgradeForWebsockets(wire)
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acceptToken(key) + b"\r\n\r\n"
        )
        protocol.negotiationFinished()
        return NOT_DONE_YET
