"""
The service collection that a master is made of.
"""

from ._periodic import LoopWatcher, Periodic
from ._readiness import MasterReadiness
from ._staged import FatalStartError, MasterService, StagedService

__all__ = [
    "FatalStartError",
    "LoopWatcher",
    "MasterReadiness",
    "MasterService",
    "Periodic",
    "StagedService",
]
