"""
The service collection that a master is made of.
"""

from ._staged import FatalStartError, MasterService, StagedService

__all__ = ["FatalStartError", "MasterService", "StagedService"]
