"""
Jobs and tasks: the seed's "Job Processing".
"""

from .command import PLACEHOLDERS, CommandError, expandCommand
from .frames import FrameSpecError, chunkFrames, countFrames, formatFrames, parseFrames
from .spec import JobSpec, Requirements, TaskSpec, jobChanges, jobSpec
from .states import ACTIVE, FINISHED, TRANSITIONS, UNFINISHED, JobState, TaskState, jobState
from .store import JobStore

__all__ = [
    "ACTIVE",
    "FINISHED",
    "PLACEHOLDERS",
    "TRANSITIONS",
    "UNFINISHED",
    "CommandError",
    "FrameSpecError",
    "JobSpec",
    "JobState",
    "JobStore",
    "Requirements",
    "TaskSpec",
    "TaskState",
    "chunkFrames",
    "countFrames",
    "expandCommand",
    "formatFrames",
    "jobChanges",
    "jobSpec",
    "jobState",
    "parseFrames",
]
