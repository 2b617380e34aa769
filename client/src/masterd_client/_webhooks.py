"""
Webhooks: URLs the master POSTs its events to, and its deliveries to each.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._base import Record, Resource, iterate_pages

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's since 3.11

#: The events a webhook may ask for.
EVENTS = (
    "job.done",
    "job.failed",
    "job.canceled",
    "task.failed",
    "agent.lost",
    "agent.exception",
    "master.down",
)


def webhook_changes(
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    secret: str | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> dict[str, Any]:
    """
    The body of a webhook's C{PATCH}: only the fields given.
    """
    given = {"url": url, "events": None if events is None else list(events), "secret": secret,
             "description": description, "enabled": enabled}  # fmt: skip
    return {key: value for key, value in given.items() if value is not None}


class Webhook(Resource):
    """
    A URL that hears of the events it asked for. Its secret signs every
    delivery (C{X-Masterd-Signature: sha256=<HMAC of the body>}) and is
    never shown after it is set.
    """

    @property
    def id(self) -> int:
        return int(self.raw["id"])

    @property
    def url(self) -> str:
        return str(self.raw["url"])

    @property
    def events(self) -> list[str]:
        return list(self.raw.get("events") or [])

    @property
    def description(self) -> str:
        return str(self.raw.get("description") or "")

    @property
    def enabled(self) -> bool:
        return bool(self.raw.get("enabled"))

    @property
    def created_at(self) -> datetime | None:
        return self._time("created_at")

    @property
    def created_by(self) -> str | None:
        return self.raw.get("created_by")

    @property
    def pending(self) -> int:
        """
        Deliveries not made yet (waiting their turn, or retrying).
        """
        return int(self.raw.get("pending") or 0)

    def deliveries(self, state: str | None = None, limit: int | None = None) -> Iterator[Delivery]:
        """
        Its deliveries, page after page as the iteration reaches them;
        C{limit} is the page size.
        """
        href = self.raw.get("deliveries") or f"{self.href}/deliveries"
        return iterate_pages(self._transport, href, {"state": state, "limit": limit},
                             lambda raw: Delivery(self._transport, raw))  # fmt: skip

    def update(
        self,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        secret: str | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Self:
        """
        Change the fields given (C{events} replaces the list).
        """
        body = webhook_changes(url=url, events=events, secret=secret, description=description,
                               enabled=enabled)  # fmt: skip
        return self._update(self._transport.send_json("PATCH", self.href, body))

    def enable(self) -> Self:
        return self.update(enabled=True)

    def disable(self) -> Self:
        """
        Deliver nothing to it until it is enabled again.
        """
        return self.update(enabled=False)

    def delete(self) -> None:
        self._transport.request("DELETE", self.href)

    def __repr__(self) -> str:
        return f"<Webhook {self.raw.get('id')} {self.raw.get('url')!r}>"


class Delivery(Record):
    """
    One event on its way to a webhook, and the tries made so far.
    """

    @property
    def id(self) -> int | str:
        return self.raw["id"]  # type: ignore[no-any-return]

    @property
    def event(self) -> str:
        return str(self.raw.get("event"))

    @property
    def state(self) -> str:
        return str(self.raw.get("state"))

    @property
    def created_at(self) -> datetime | None:
        return self._time("created_at")

    @property
    def attempts(self) -> int:
        return int(self.raw.get("attempts") or 0)

    @property
    def next_attempt_at(self) -> datetime | None:
        return self._time("next_attempt_at")

    @property
    def delivered_at(self) -> datetime | None:
        return self._time("delivered_at")

    @property
    def status(self) -> int | None:
        """
        The receiver's last HTTP status; C{None} before any answer.
        """
        return self.raw.get("status")

    @property
    def error(self) -> str | None:
        return self.raw.get("error")

    @property
    def tries(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.raw.get("tries") or []]

    @property
    def body(self) -> Any:
        """
        The JSON document POSTed.
        """
        return self.raw.get("body")

    def __repr__(self) -> str:
        raw = self.raw
        return f"<Delivery {raw.get('id')} {raw.get('event')} {raw.get('state')}>"
