"""
Talkback: agents on a persistent WebSocket channel (docs/talkback.md).
"""

from ._connection import (
    FORBIDDEN,
    GOING_AWAY,
    POLICY,
    REPLACED,
    TIMED_OUT,
    TOO_BIG,
    UNAUTHORIZED,
    TalkbackConnection,
    TalkbackSettings,
)
from .directory import AgentDirectory
from .factory import TalkbackFactory
from .registry import AgentRegistry, TalkbackStats
from .service import TalkbackService
from .store import HELLO_BATCH, AgentStore, Refused

__all__ = [
    "FORBIDDEN",
    "GOING_AWAY",
    "HELLO_BATCH",
    "POLICY",
    "REPLACED",
    "TIMED_OUT",
    "TOO_BIG",
    "UNAUTHORIZED",
    "AgentDirectory",
    "AgentRegistry",
    "AgentStore",
    "Refused",
    "TalkbackConnection",
    "TalkbackFactory",
    "TalkbackService",
    "TalkbackSettings",
    "TalkbackStats",
]
