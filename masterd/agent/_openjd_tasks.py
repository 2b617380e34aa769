"""
What the OpenJD runner (masterd.agent.openjd) keeps of each task and each
session, read from the assign payload, and the small helpers that read it:
the agent's path mapping rules, parameter values, text fit for the master.
"""

from __future__ import annotations

from typing import Any

from openjd.model import ParameterValue, ParameterValueType, parse_model
from openjd.model.v2023_09 import Environment, ExtensionName, StepScript
from openjd.sessions import ActionState, ActionStatus, PathMappingRule, Session
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from .accounting import TreeSampler
from .gpus import taskEnvironment

#: The extensions an action may use when the payload does not say which its
#: job's template asked for.
DEFAULT_EXTENSIONS = (
    ExtensionName.TASK_CHUNKING.value,
    ExtensionName.REDACTED_ENV_VARS.value,
    ExtensionName.FEATURE_BUNDLE_1.value,
)
_RULE_KEYS = {"source_path_format", "source_path", "destination_path"}


def pathMappingRules(raw: Any) -> list[PathMappingRule]:
    """
    The agent's C{path-mapping} option: a list of C{{source_path_format:
    POSIX | WINDOWS, source_path, destination_path}}, the OpenJD
    PathMappingRule shape.

    @raise ValueError: saying which rule is wrong, and why.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("must be a list of {source_path_format, source_path, destination_path}")
    rules = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != _RULE_KEYS:
            raise ValueError(
                f"[{i}]: must have source_path_format, source_path and destination_path"
            )
        if not all(isinstance(v, str) and v for v in item.values()):
            raise ValueError(f"[{i}]: each field must be a non-empty string")
        if item["source_path_format"].upper() not in ("POSIX", "WINDOWS"):
            raise ValueError(f"[{i}].source_path_format: must be POSIX or WINDOWS")
        try:
            rules.append(PathMappingRule.from_dict(item))
        except ValueError as e:
            raise ValueError(f"[{i}]: {e}") from None
    return rules


def cleanText(text: str, limit: int) -> str:
    # The master refuses NUL in text (PostgreSQL cannot store it).
    return text.replace("\0", "\ufffd")[:limit]


def _parameters(raw: Any) -> dict[str, ParameterValue]:
    """
    Parameter values as the assign payload carries them (C{{"Name": {"type":
    "INT", "value": "5"}}}).
    """
    return {
        str(name): ParameterValue(type=ParameterValueType(v["type"]), value=v["value"])
        for name, v in (raw or {}).items()
    }


class OpenJDTask:
    """
    An OpenJD task this agent runs.
    """

    def __init__(self, task: dict[str, Any], gpus: int) -> None:
        payload = task["openjd"]
        self.task_id: int = task["task_id"]
        self.attempt: int = task["attempt"]
        job, step = payload["job"], payload["step"]
        self.job_id: int = int(job["id"])
        self.job_name: str | None = job.get("name")
        extensions = job.get("extensions")
        self.extensions: tuple[str, ...] = (
            DEFAULT_EXTENSIONS if extensions is None else tuple(map(str, extensions))
        )
        self.job_parameters = _parameters(job.get("parameters"))
        self.job_environments = [
            parse_model(model=Environment, obj=e, supported_extensions=self.extensions)
            for e in job.get("environments") or ()
        ]
        self.step_name: str = step["name"]
        self.script = parse_model(
            model=StepScript, obj=step["script"], supported_extensions=self.extensions
        )
        self.step_environments = [
            parse_model(model=Environment, obj=e, supported_extensions=self.extensions)
            for e in step.get("environments") or ()
        ]
        self.parameters = _parameters(payload.get("parameters"))
        self.env: dict[str, str] = {str(k): str(v) for k, v in (task.get("env") or {}).items()}
        #: What the task's own action sees beside the environments' variables.
        self.task_env = dict(self.env)
        self.task_env["MASTERD_TASK_ID"] = str(self.task_id)
        self.task_env["MASTERD_ATTEMPT"] = str(self.attempt)
        self.task_env.update(taskEnvironment(task.get("gpu_devices") or (), gpus))
        self.timeout_s: float | None = task.get("timeout_s")
        self.session: OpenJDSession | None = None
        self.canceled = False
        self.reason = ""
        #: Canceled because the agent stops: handed back (rejected), not failed.
        self.stopping = False
        #: Its own action (not an environment's) is the one running.
        self.running = False
        #: When its run action started and ended (time.monotonic), and the
        #: sampler of the action's process tree, once its pid is known.
        self.runStarted: float | None = None
        self.runEnded: float | None = None
        self.sampler: TreeSampler | None = None
        self.lines: list[str] = []
        self.progress: float | None = None
        self.status: str | None = None
        self.sent: tuple[float | None, str | None] = (None, None)
        self.flushCall: IDelayedCall | None = None
        self.timeoutCall: IDelayedCall | None = None


class OpenJDSession:
    """
    One OpenJD session of a job, and what it has entered.
    """

    def __init__(self, sessionID: str, first: OpenJDTask) -> None:
        self.id = sessionID
        self.job_id = first.job_id
        self.first = first
        self.session: Session | None = None
        #: The step whose environments are entered (None: none yet).
        self.step: str | None = None
        self.step_entered: list[str] = []
        self.task: OpenJDTask | None = None
        #: The action under way: fired with its final status.
        self.action: Deferred[ActionStatus] | None = None
        #: The call that starts it has returned: it may be canceled.
        self.started = False
        self.linger: IDelayedCall | None = None
        self.ending = False
        #: Past the agent's stop bound: no more environment exits.
        self.hurry = False
        self.ended: Deferred[None] = Deferred()


def failureText(status: ActionStatus) -> str:
    if status.fail_message:
        return status.fail_message
    if status.state == ActionState.TIMEOUT:
        return "timed out"
    if status.state == ActionState.CANCELED:
        return "canceled"
    if status.exit_code is not None:
        return f"exited with status {status.exit_code}"
    return "failed"
