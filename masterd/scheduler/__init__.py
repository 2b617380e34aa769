"""
The scheduler: the right task to the right agent, exactly once.
"""

from .claims import Capacity, claim, claimMany
from .preemption import PreemptionSettings
from .service import AgentSlots, Scheduler, SchedulerSettings, loadSlots
from .timeouts import assignTimeouts, stallTimeouts, taskTimeouts

__all__ = [
    "AgentSlots",
    "Capacity",
    "PreemptionSettings",
    "Scheduler",
    "SchedulerSettings",
    "assignTimeouts",
    "claim",
    "claimMany",
    "loadSlots",
    "stallTimeouts",
    "taskTimeouts",
]
