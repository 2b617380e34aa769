"""
Builds a talkback connection for each WebSocket upgrade on
C{/api/v1/talkback}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from masterd.accounts import Authenticator

from ._connection import TalkbackConnection, TalkbackSettings
from .registry import AgentRegistry


class TalkbackFactory:
    """
    Implements L{twisted.web.websocket.WebSocketServerFactory}.
    """

    def __init__(
        self,
        registry: AgentRegistry,
        auth: Authenticator,
        settings: TalkbackSettings,
        clock: IReactorTime,
    ) -> None:
        self.registry = registry
        self.auth = auth
        self.settings = settings
        self.clock = clock

    def buildProtocol(self, request: Any) -> TalkbackConnection:
        # The upgraded HTTP channel must not time out as an idle HTTP
        # connection would: liveness is ours now (pings and agent_timeout_s).
        channel = getattr(request, "channel", None)
        if channel is not None and hasattr(channel, "setTimeout"):
            channel.setTimeout(None)
        upgraded = getattr(request, "upgraded", None)
        if upgraded is not None:
            upgraded()
        return TalkbackConnection(
            self.registry,
            self.auth,
            self.settings,
            self.clock,
            getattr(request, "principal", None),
        )
