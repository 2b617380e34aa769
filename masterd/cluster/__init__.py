"""
Several masters on one database: registration and heartbeats.
"""

from .notify import Notifier
from .registry import MasterRegistry

__all__ = ["MasterRegistry", "Notifier"]
