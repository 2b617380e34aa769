"""
The scheduler: the right task to the right agent, exactly once.
"""

from .claims import Capacity, claim, claimMany
from .service import AgentSlots, Scheduler, SchedulerSettings, loadSlots
from .timeouts import assignTimeouts, taskTimeouts

__all__ = [
    "AgentSlots",
    "Capacity",
    "Scheduler",
    "SchedulerSettings",
    "assignTimeouts",
    "claim",
    "claimMany",
    "loadSlots",
    "taskTimeouts",
]
