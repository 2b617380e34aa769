"""
Talkback: agents on a persistent WebSocket channel (docs/talkback.md).
"""

from ._connection import (
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
from .store import HELLO_BATCH, AgentStore

__all__ = [
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
    "TalkbackConnection",
    "TalkbackFactory",
    "TalkbackService",
    "TalkbackSettings",
    "TalkbackStats",
]
