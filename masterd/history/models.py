"""
The farm's history as the API shows it (GET /api/v1/history).
"""

from __future__ import annotations

from typing import Annotated, Literal

from masterd.schema import UNSET, Document, Meta, Model, Time, Unset

#: What the figures are keyed by: a job's project, its owner, or its
#: agent's pools (each of the agent's tags; "" for an untagged agent).
HistoryBy = Literal["project", "owner", "pool"]

#: The longest range one request may ask for.
MAX_RANGE_DAYS = 366
#: The range when since is not given: this long before until.
DEFAULT_RANGE_DAYS = 7

HISTORY_HREF = "/api/v1/history"

_TIME = {"format": "date-time"}
Since = Annotated[
    str,
    Meta(
        max_length=64,
        extra_json_schema=_TIME,
        description="ISO 8601 with its zone: the hours from the one holding it; default "
        f"until minus {DEFAULT_RANGE_DAYS} days",
    ),
]
Until = Annotated[
    str,
    Meta(
        max_length=64,
        extra_json_schema=_TIME,
        description="ISO 8601 with its zone: the hours that begin before it; default now. "
        f"At most {MAX_RANGE_DAYS} days after since",
    ),
]


class HistoryQuery(Model):
    by: (
        Annotated[
            HistoryBy,
            Meta(
                description="Key the figures by the job's project, its owner, or each pool "
                '(tag) of the agent that ran the attempt; left out: one key, "", for the '
                "whole farm"
            ),
        ]
        | Unset
    ) = UNSET
    since: Since | Unset = UNSET
    until: Until | Unset = UNSET


class HistoryFigures(Document):
    #: Attempts that finished done.
    tasks_done: int
    #: Attempts that finished failed (each try of a retried task counts).
    tasks_failed: int
    #: Every attempt that finished: done, failed, canceled, lost, rejected,
    #: preempted.
    attempts: int
    #: User and system CPU time of the attempts, as their agents measured
    #: it, in core-hours.
    core_hours: float
    #: Wall time of the attempts, as their agents measured it, in hours.
    wall_hours: float


class HistoryHour(HistoryFigures):
    """
    The attempts of one key that finished in the hour from C{hour}.
    """

    hour: Time
    key: str


class HistoryTotal(HistoryFigures):
    """
    One key's figures over the whole range.
    """

    key: str


class HistoryDocument(Document):
    href: str
    by: HistoryBy | None
    since: Time
    until: Time
    #: Every attempt that finished before this time is in the figures (the
    #: roll-up runs behind by its lag); null before the first roll-up.
    rolled_to: Time | None
    #: One entry per hour and key with any attempt, by hour then key.
    items: list[HistoryHour]
    #: One entry per key of the items, by key.
    totals: list[HistoryTotal]
