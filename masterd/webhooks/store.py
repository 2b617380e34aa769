"""
Webhooks in PostgreSQL, as the routes change and read them: one
transaction per change (the route writes its audit row in it), and the
deliveries of a webhook, newest first.
"""

from __future__ import annotations

from typing import Any

from masterd._time import isoformat, isotime
from masterd.db import Pool, Transaction
from masterd.errors import NoSuchResource

from .models import DeliveryDocument, TryDocument, WebhookDocument
from .payload import payload

_COLUMNS = (
    "w.id, w.url, w.events, w.description, w.enabled, w.created_at, w.created_by,"
    " (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id"
    " AND d.state = 'pending')"
)

#: The tries shown with each delivery: the latest ones. A delivery retried
#: for a day at the longest backoff has about 150.
MAX_TRIES_SHOWN = 100


def webhookDocument(row: tuple[Any, ...]) -> WebhookDocument:
    id_, url, events, description, enabled, created, by, pending = row
    href = f"/api/v1/webhooks/{id_}"
    return WebhookDocument(
        id=id_,
        href=href,
        url=url,
        events=list(events),
        description=description,
        enabled=enabled,
        created_at=isotime(created),
        created_by=by,
        deliveries=f"{href}/deliveries",
        pending=int(pending),
    )


class WebhookStore:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def create(
        self,
        txn: Transaction,
        *,
        url: str,
        events: list[str],
        secret: str,
        description: str,
        enabled: bool,
        createdBy: str,
    ) -> WebhookDocument:
        rows = await txn.query(
            "INSERT INTO webhooks AS w (url, events, secret, description, enabled, created_by)"
            f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (url, events, secret, description, enabled, createdBy),
        )
        return webhookDocument(rows[0])

    async def patch(
        self, txn: Transaction, webhookID: int, changes: dict[str, Any]
    ) -> WebhookDocument:
        """
        Set the columns named in C{changes} (url, events, secret,
        description, enabled). Deliveries already pending go to the new URL
        with the new secret; a disabled webhook keeps its pending deliveries
        until it is enabled again, and gets no new ones meanwhile.
        """
        allowed = ("url", "events", "secret", "description", "enabled")
        sets = [f"{name} = %s" for name in allowed if name in changes]
        params = [changes[name] for name in allowed if name in changes]
        if sets:
            rows = await txn.query(
                f"UPDATE webhooks w SET {', '.join(sets)} WHERE w.id = %s RETURNING {_COLUMNS}",
                (*params, webhookID),
            )
        else:
            rows = await txn.query(f"SELECT {_COLUMNS} FROM webhooks w WHERE w.id = %s",
                                   (webhookID,))  # fmt: skip
        if not rows:
            raise NoSuchResource("webhook", webhookID)
        return webhookDocument(rows[0])

    async def delete(self, txn: Transaction, webhookID: int) -> None:
        """
        Delete a webhook with its deliveries (pending ones included) and
        their tries; a delivery in flight finds nothing to record.
        """
        # The events that only this webhook delivers go with it (the
        # snapshot of the statement still sees the deliveries its CTE
        # deletes, hence the webhook_id test).
        await txn.execute(
            "WITH gone AS (DELETE FROM webhook_deliveries WHERE webhook_id = %(w)s"
            " RETURNING event_id) DELETE FROM webhook_events e USING gone"
            " WHERE e.id = gone.event_id AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d"
            " WHERE d.event_id = e.id AND d.webhook_id <> %(w)s)",
            {"w": webhookID},
        )
        rows = await txn.query("DELETE FROM webhooks WHERE id = %s RETURNING id", (webhookID,))
        if not rows:
            raise NoSuchResource("webhook", webhookID)

    async def get(self, webhookID: int) -> WebhookDocument:
        rows = await self._pool.query(
            f"SELECT {_COLUMNS} FROM webhooks w WHERE w.id = %s", (webhookID,)
        )
        if not rows:
            raise NoSuchResource("webhook", webhookID)
        return webhookDocument(rows[0])

    async def listWebhooks(
        self, *, limit: int, after: int | None
    ) -> tuple[list[WebhookDocument], bool]:
        rows = await self._pool.query(
            f"SELECT {_COLUMNS} FROM webhooks w WHERE (%s::bigint IS NULL OR w.id > %s)"
            " ORDER BY w.id LIMIT %s",
            (after, after, limit + 1),
        )
        return [webhookDocument(r) for r in rows[:limit]], len(rows) > limit

    async def deliveries(
        self, webhookID: int, *, state: str | None, limit: int, after: str | None
    ) -> tuple[list[DeliveryDocument], bool]:
        """
        A webhook's deliveries, newest event first, each with its latest
        tries and its payload.
        """

        async def work(txn: Transaction) -> tuple[list[DeliveryDocument], bool]:
            found = await txn.query("SELECT 1 FROM webhooks WHERE id = %s", (webhookID,))
            if not found:
                raise NoSuchResource("webhook", webhookID)
            rows = await txn.query(
                "SELECT d.id, e.kind, d.state, e.created_at, d.attempts, d.next_attempt_at,"
                " d.delivered_at, d.last_status, d.last_error, e.body, e.master, e.id"
                " FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"
                " WHERE d.webhook_id = %(w)s AND (%(state)s::text IS NULL OR d.state = %(state)s)"
                " AND (%(after)s::uuid IS NULL OR d.event_id < (SELECT a.event_id FROM"
                " webhook_deliveries a WHERE a.id = %(after)s::uuid AND a.webhook_id = %(w)s))"
                " ORDER BY d.event_id DESC LIMIT %(limit)s",
                {"w": webhookID, "state": state, "after": after, "limit": limit + 1},
            )
            more, rows = len(rows) > limit, rows[:limit]
            ids = [str(r[0]) for r in rows]
            tries: dict[str, list[TryDocument]] = {i: [] for i in ids}
            if ids:
                for delivery, at, status, error, ms, master in await txn.query(
                    "SELECT t.delivery_id, t.at, t.status, t.error, t.duration_ms, t.master"
                    " FROM unnest(%s::uuid[]) AS x (id) CROSS JOIN LATERAL ("
                    " SELECT * FROM webhook_tries t WHERE t.delivery_id = x.id"
                    " ORDER BY t.id DESC LIMIT %s) t ORDER BY t.delivery_id, t.id",
                    (ids, MAX_TRIES_SHOWN),
                ):
                    tries[str(delivery)].append(
                        TryDocument(at=isotime(at), status=status, error=error,
                                    duration_ms=ms, master=master)
                    )  # fmt: skip
            return [_delivery(r, tries[str(r[0])]) for r in rows], more

        return await self._pool.transaction(work)


def _delivery(row: tuple[Any, ...], tries: list[TryDocument]) -> DeliveryDocument:
    id_, kind, state, created, attempts, nextAt, deliveredAt, status, error, body, master, _ = row
    return DeliveryDocument(
        id=str(id_),
        event=kind,
        state=state,
        created_at=isotime(created),
        attempts=attempts,
        next_attempt_at=isoformat(nextAt) if state == "pending" else None,
        delivered_at=isoformat(deliveredAt),
        status=status,
        error=error,
        tries=tries,
        body=payload(str(id_), kind, created, master, body),
    )
