"""
The constrained field types that the job models and the job documents
share: frames, commands, environments, priorities, timeouts, the names of
layers, limits and projects, dependency modes, and the state names.

They are apart from masterd.jobs.models only so that the documents
(masterd.jobs._model_documents) can use them too; masterd.jobs.models
re-exports every one, and is where other code imports them from.
"""

from __future__ import annotations

from typing import Annotated, Literal

from masterd.schema import MAX_INT, Meta

from .command import ARGUMENT_PATTERN
from .frames import MAX_FRAME, SPEC_PATTERN

MAX_TASKS_PER_JOB = 1_000_000

Frame = Annotated[int, Meta(ge=-MAX_FRAME, le=MAX_FRAME)]
FrameSpec = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=10_000,
        extra_json_schema={"pattern": SPEC_PATTERN},
        description='Frames like "1-100", "1-100x5,200,210-215" (ranges run upwards, '
        "a step after x); each frame once",
    ),
]
Frames = (
    FrameSpec
    | Annotated[
        list[Frame],
        Meta(min_length=1, max_length=MAX_TASKS_PER_JOB, extra_json_schema={"uniqueItems": True}),
    ]
)
Argument = Annotated[str, Meta(max_length=10_000)]
CommandArgument = Annotated[
    str, Meta(max_length=10_000, extra_json_schema={"pattern": ARGUMENT_PATTERN})
]
Command = Annotated[
    list[CommandArgument],
    Meta(
        min_length=1,
        max_length=1000,
        description="An argv (no shell); {frame}, {start}, {end} and {frames} are expanded "
        "per task, with an alignment, a sign, zero padding and a width up to 64 "
        "({frame:04d}, {frames:<20}); {{ and }} are literal braces",
    ),
]
EnvName = Annotated[str, Meta(min_length=1, max_length=1000, pattern=r"^[^=]+$")]
Env = Annotated[dict[EnvName, Argument], Meta(max_length=1000)]
Priority = Annotated[int, Meta(ge=0, le=100)]
Weight = Annotated[int, Meta(ge=1, le=1000)]
Retries = Annotated[int, Meta(ge=0, le=100)]
Timeout = Annotated[int, Meta(ge=1, le=30 * 24 * 3600)]
Chunk = Annotated[int, Meta(ge=1, le=MAX_TASKS_PER_JOB)]
Path = Annotated[str, Meta(min_length=1, max_length=4096)]
JobStateName = Literal["waiting", "queued", "running", "paused", "done", "failed", "canceled"]
TaskStateName = Literal["waiting", "queued", "assigned", "running", "done", "failed", "canceled"]


LayerName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="A layer's name, unique in its job: letters, digits, _ . -",
    ),
]
#: What a limit's and a project's name may be (also checked in the path of
#: PUT /api/v1/limits/{name} and /api/v1/projects/{name}).
LIMIT_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
LIMIT_NAME_LENGTH = 64
PROJECT_NAME_PATTERN = r"^[^\s/?#%][^/?#%]*$"
PROJECT_NAME_LENGTH = 255
LimitName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=LIMIT_NAME_LENGTH,
        pattern=LIMIT_NAME_PATTERN,
        description="A limit's name: letters, digits, _ . -",
    ),
]
ProjectName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=PROJECT_NAME_LENGTH,
        pattern=PROJECT_NAME_PATTERN,
        description="A project's name (no /, ?, # or %)",
    ),
]
LimitNames = Annotated[list[LimitName], Meta(max_length=32)]
MaxRunning = Annotated[int, Meta(ge=1, le=MAX_INT)]
DependencyMode = Literal["layer", "job", "frame"]
OnFailure = Literal["wait", "cancel"]
