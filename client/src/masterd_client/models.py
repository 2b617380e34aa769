"""
The API's resources as Python objects (the seed's "Models").

Every model wraps the JSON document the master sent (C{raw}) and shows its
fields as attributes; times become aware datetimes. References to other
resources are hrefs, followed only when asked: C{job.tasks()},
C{task.job()}, C{agent.failures()} each make a request then, never before.
Methods that change something return the model, updated from the master's
answer.
"""

from ._accounts import AuditEntry, Token
from ._agents import Agent, AgentException, AgentJob, Master
from ._base import LogChunk, Requirements, TaskCounts, parse_time
from ._jobs import Attempt, Job, Task
from ._layers import Dependency, Layer, LayerSpec
from ._scheduling import Limit, Project
from ._webhooks import Delivery, Webhook

__all__ = [
    "Agent",
    "AgentException",
    "AgentJob",
    "Attempt",
    "AuditEntry",
    "Delivery",
    "Dependency",
    "Job",
    "Layer",
    "LayerSpec",
    "Limit",
    "LogChunk",
    "Master",
    "Project",
    "Requirements",
    "Task",
    "TaskCounts",
    "Token",
    "Webhook",
    "parse_time",
]
