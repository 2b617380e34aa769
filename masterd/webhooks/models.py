"""
Webhooks as the API takes and shows them (masterd.schema), and the event
types a webhook may want.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from masterd.errors import InvalidField
from masterd.schema import UNSET, Document, Id, Meta, Model, PageLimit, Time, Unset

Limit = PageLimit

#: Every kind of event, in the order the documentation lists them.
EVENT_TYPES = (
    "job.done",
    "job.failed",
    "job.canceled",
    "task.failed",
    "agent.lost",
    "agent.exception",
    "master.down",
)
EventType = Literal[
    "job.done",
    "job.failed",
    "job.canceled",
    "task.failed",
    "agent.lost",
    "agent.exception",
    "master.down",
]
DeliveryState = Literal["pending", "delivered", "failed"]

# An http or https URL with a host, and no white space or control character
# anywhere (a NUL is refused for every string already). Published as the
# schema's pattern and enforced with fullmatch, since Python's "$" would let
# a trailing newline through where JSON Schema's does not.
_URL = r"https?://[^\x00-\x20\x7f/?#]+(?:[/?#][^\x00-\x20\x7f]*)?"
URL_PATTERN = f"^{_URL}$"
_URL_RE = re.compile(_URL)

URL = Annotated[
    str,
    Meta(
        min_length=8,
        max_length=2000,
        extra_json_schema={"pattern": URL_PATTERN},
        description="An http or https URL with a host; no white space",
    ),
]
Events = Annotated[
    list[EventType],
    Meta(min_length=1, max_length=len(EVENT_TYPES), extra_json_schema={"uniqueItems": True}),
]
Secret = Annotated[
    str,
    Meta(
        min_length=16,
        max_length=1000,
        description="The key of the HMAC-SHA256 in X-Masterd-Signature; never answered",
    ),
]
Description = Annotated[str, Meta(max_length=1000)]


def checkURL(url: str) -> str:
    """
    @raise InvalidField: naming C{url}, for what the pattern says and the
        type alone let through.
    """
    if _URL_RE.fullmatch(url) is None:
        raise InvalidField("url", "must be an http or https URL with a host and no white space")
    return url


def checkEvents(events: list[str]) -> list[str]:
    seen: set[str] = set()
    for i, kind in enumerate(events):
        if kind in seen:
            raise InvalidField(f"events[{i}]", f"{kind!r} is listed twice")
        seen.add(kind)
    return events


class WebhookCreate(Model):
    url: URL
    events: Events
    secret: Secret
    description: Description = ""
    enabled: bool = True


class WebhookPatch(Model):
    """
    Only the fields given change.
    """

    url: URL | Unset = UNSET
    events: Events | Unset = UNSET
    secret: Secret | Unset = UNSET
    description: Description | Unset = UNSET
    enabled: bool | Unset = UNSET


class WebhookQuery(Model):
    limit: Limit = 100
    after: Id | Unset = UNSET


class DeliveryQuery(Model):
    state: DeliveryState | Unset = UNSET
    limit: Limit = 50
    after: (
        Annotated[
            str,
            Meta(
                pattern="^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                description="A delivery id: the page goes on after it",
            ),
        ]
        | Unset
    ) = UNSET


class WebhookDocument(Document):
    id: int
    href: str
    url: str
    events: list[EventType]
    description: str
    enabled: bool
    created_at: Time
    created_by: str
    #: Where this webhook's deliveries are listed.
    deliveries: str
    #: How many of its deliveries are not delivered yet (nor given up).
    pending: int


class WebhookPage(Document):
    items: list[WebhookDocument]
    next: str | None


class TryDocument(Document):
    at: Time
    #: The HTTP status answered; null when none came (refused, timed out).
    status: int | None
    error: str | None
    duration_ms: int
    master: str


class DeliveryDocument(Document):
    #: The delivery id: X-Masterd-Delivery, the same on every try.
    id: str
    event: EventType
    state: DeliveryState
    created_at: Time
    attempts: int
    next_attempt_at: Time | None
    delivered_at: Time | None
    status: int | None
    error: str | None
    #: The latest tries (at most 100), oldest first.
    tries: list[TryDocument]
    #: The payload, as posted.
    body: dict[str, Any]


class DeliveryPage(Document):
    items: list[DeliveryDocument]
    next: str | None
