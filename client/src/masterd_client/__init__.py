"""
A client of the master's HTTP API for pipeline tools and scripts, on the
standard library alone: nothing to install beyond this package.

    from masterd_client import Client, Dependency, LayerSpec, MasterdError

    client = Client.from_env()            # $MASTERD_URL, $MASTERD_TOKEN
    job = client.submit(title="shot 10", command=["render", "{frame}"], frames="1-100")
    for task in job.tasks(state="failed"):
        print(task.id, task.log())

    # Layers: sim, then render, then comp frame by frame as renders finish.
    client.submit(title="shot 10", layers=[
        LayerSpec("sim", command=["sim", "{start}", "{end}"], frames="1-100", chunk=100),
        LayerSpec("render", command=["render", "{frame}"], frames="1-100", depends_on=["sim"]),
        LayerSpec("comp", command=["comp", "{frame}"], frames="1-100", limits=["nuke"],
                  depends_on=[Dependency(layer="render", mode="frame")]),
    ])

See docs/client.md. This package must import nothing outside the standard
library (a test checks it): no Twisted, no database driver.
"""

from ._accounts import ROLES
from ._client import DEFAULT_URL, Client, submission
from ._errors import MasterdError
from ._follow import LogFollower
from ._openjd import check_openjd, openjd_submission
from ._version import __version__
from ._webhooks import EVENTS
from .models import (
    Agent,
    AgentException,
    AgentJob,
    Attempt,
    AuditEntry,
    Delivery,
    Dependency,
    Job,
    Layer,
    LayerSpec,
    Limit,
    LogChunk,
    Master,
    Project,
    Requirements,
    Task,
    TaskCounts,
    Token,
    Webhook,
    parse_time,
)

__all__ = [
    "DEFAULT_URL",
    "EVENTS",
    "ROLES",
    "Agent",
    "AgentException",
    "AgentJob",
    "Attempt",
    "AuditEntry",
    "Client",
    "Delivery",
    "Dependency",
    "Job",
    "Layer",
    "LayerSpec",
    "Limit",
    "LogChunk",
    "LogFollower",
    "Master",
    "MasterdError",
    "Project",
    "Requirements",
    "Task",
    "TaskCounts",
    "Token",
    "Webhook",
    "__version__",
    "check_openjd",
    "openjd_submission",
    "parse_time",
    "submission",
]
