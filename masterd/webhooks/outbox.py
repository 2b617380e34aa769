"""
The outbox as the delivering masters see it: leases on webhooks, each
taken and given back in a short statement of its own, so that no
transaction (nor pool connection) is held while a receiver answers.

A webhook's deliveries go one at a time and in event order: a master
leases the webhook (never a single delivery) and posts its oldest pending
delivery, the head of its line. The lease is taken with FOR UPDATE SKIP
LOCKED, so that two masters claiming at once take different webhooks, and
it lasts the HTTP timeout and a margin: a master killed mid-delivery holds
it no longer than that, and then another master delivers the event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from attrs import frozen

from masterd.db import Pool, Transaction

from .payload import encode, payload


@frozen
class Claim:
    """
    One leased webhook and the delivery at the head of its line.
    """

    webhookID: int
    url: str
    secret: str
    #: This lease's own id: only its holder gives it back.
    lease: str
    deliveryID: str
    kind: str
    #: Failed tries so far.
    attempts: int
    at: datetime
    body: bytes


@frozen
class Outcome:
    """
    What one try of a delivery came to.
    """

    #: The receiver answered 2xx.
    delivered: bool
    status: int | None
    error: str | None
    durationMS: int


class Outbox:
    def __init__(self, pool: Pool, master: str) -> None:
        self._pool = pool
        self.master = master

    async def claim(self, count: int, leaseSeconds: float) -> list[Claim]:
        """
        Lease up to C{count} enabled webhooks whose head of line is due and
        that no live lease holds; their head deliveries, to be posted.
        """
        rows = await self._pool.query(
            "WITH c AS (SELECT w.id, h.id AS delivery FROM webhooks w"
            " CROSS JOIN LATERAL (SELECT d.id, d.next_attempt_at FROM webhook_deliveries d"
            " WHERE d.webhook_id = w.id AND d.state = 'pending' ORDER BY d.event_id LIMIT 1) h"
            " WHERE w.enabled AND (w.claimed_until IS NULL OR w.claimed_until < now())"
            " AND h.next_attempt_at <= now() ORDER BY h.next_attempt_at, w.id LIMIT %s"
            " FOR UPDATE OF w SKIP LOCKED),"
            " u AS (UPDATE webhooks w SET claimed_by = %s,"
            " claimed_until = now() + %s * interval '1 second', claim = gen_random_uuid()"
            " FROM c WHERE w.id = c.id RETURNING w.id, w.url, w.secret, w.claim, c.delivery)"
            " SELECT u.id, u.url, u.secret, u.claim, d.id, e.kind, d.attempts, e.created_at,"
            " e.master, e.body FROM u JOIN webhook_deliveries d ON d.id = u.delivery"
            " JOIN webhook_events e ON e.id = d.event_id ORDER BY u.id",
            (count, self.master, leaseSeconds),
        )
        claims = []
        for webhookID, url, secret, lease, deliveryID, kind, attempts, at, master, data in rows:
            deliveryID = str(deliveryID)
            claims.append(
                Claim(
                    webhookID=webhookID, url=url, secret=secret, lease=str(lease),
                    deliveryID=deliveryID, kind=kind, attempts=attempts, at=at,
                    body=encode(payload(deliveryID, kind, at, master, data)),
                )
            )  # fmt: skip
        return claims

    async def finish(
        self, claim: Claim, outcome: Outcome, retryIn: float, retryFor: float
    ) -> str | None:
        """
        Record a try and give the lease back, in one transaction. A failed
        try is retried in C{retryIn} seconds, but never later than
        C{retryFor} after the event; a try at or past that is the last, and
        the delivery is then C{failed}, so that the webhook's next event
        goes on. The try is recorded even if the lease was lost meanwhile
        (it happened); a delivery deleted meanwhile records nothing.

        @return: the delivery's state now (None if it is gone).
        """

        async def work(txn: Transaction) -> str | None:
            rows = await txn.query(
                "WITH t AS (INSERT INTO webhook_tries (delivery_id, status, error, duration_ms,"
                " master) SELECT id, %(status)s, %(error)s, %(ms)s, %(master)s"
                " FROM webhook_deliveries WHERE id = %(d)s)"
                " UPDATE webhook_deliveries d SET attempts = d.attempts + 1,"
                " last_status = %(status)s, last_error = %(error)s,"
                " state = CASE WHEN %(ok)s THEN 'delivered'"
                " WHEN now() >= e.created_at + %(for)s * interval '1 second' THEN 'failed'"
                " ELSE 'pending' END,"
                " delivered_at = CASE WHEN %(ok)s THEN now() END,"
                " next_attempt_at = CASE WHEN %(ok)s THEN d.next_attempt_at"
                " ELSE least(now() + %(in)s * interval '1 second',"
                " e.created_at + %(for)s * interval '1 second') END"
                " FROM webhook_events e WHERE e.id = d.event_id AND d.id = %(d)s"
                " AND d.state = 'pending' RETURNING d.state",
                {"d": claim.deliveryID, "status": outcome.status, "error": outcome.error,
                 "ms": outcome.durationMS, "master": self.master, "ok": outcome.delivered,
                 "for": retryFor, "in": retryIn},
            )  # fmt: skip
            await self._release(txn, [claim])
            return str(rows[0][0]) if rows else None

        return await self._pool.transaction(work)

    async def release(self, claims: list[Claim]) -> None:
        """
        Give leases back without recording a try (the master is stopping):
        another master may deliver at once, with the same delivery id.
        """
        if claims:
            await self._pool.transaction(lambda txn: self._release(txn, claims))

    async def _release(self, txn: Transaction, claims: list[Claim]) -> Any:
        await txn.execute(
            "UPDATE webhooks SET claimed_by = NULL, claimed_until = NULL, claim = NULL"
            " WHERE claim = ANY (%s::uuid[])",
            ([c.lease for c in claims],),
        )
