"""
Several masters on one database: registration and heartbeats.
"""

from .registry import MasterRegistry

__all__ = ["MasterRegistry"]
