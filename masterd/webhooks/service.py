"""
The delivering service: every master runs one. It polls the outbox every
C{webhooks.poll_s} (the outbox is the record; polling is the mechanism),
leases due webhooks up to C{webhooks.concurrency} deliveries in flight,
posts each outside any transaction, records the try and gives the lease
back, then looks for more at once (a backlog drains without waiting for the
next poll). Nothing a receiver does can hold it up (see sender), and it
survives any exception: logged, counted, and the next poll runs anyway.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define
from twisted.application.internet import backoffPolicy
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from masterd.config import WebhooksConfig
from masterd.db import DatabaseUnavailable
from masterd.service import LoopWatcher, Periodic, StagedService

from .outbox import Claim, Outbox, Outcome
from .sender import Sender

log = Logger()

#: A lease lasts the HTTP timeout and this: time for the claim's answer to
#: reach the master and the request to start. A lease that outlives its
#: request only delays the next try; one shorter than it would let two
#: masters post the same delivery at once.
LEASE_MARGIN_S = 5.0


@define
class WebhookStats:
    claims: int = 0
    delivered: int = 0
    #: Tries that did not end in a 2xx (each is retried, or given up).
    failed_tries: int = 0
    given_up: int = 0
    exceptions: int = 0
    in_flight: int = 0

    def snapshot(self) -> dict[str, int]:
        return {
            "claims": self.claims,
            "delivered": self.delivered,
            "failed_tries": self.failed_tries,
            "given_up": self.given_up,
            "exceptions": self.exceptions,
            "in_flight": self.in_flight,
        }


class _InFlight:
    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        #: The HTTP try, while it runs (cancelled when the master stops).
        self.sending: Deferred[Outcome] | None = None
        #: The whole delivery: the try, then its record.
        self.done: Deferred[None] | None = None
        #: Cut short because the master is stopping: not a try to record.
        self.cut = False


class WebhookService(StagedService):
    name = "webhooks"

    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        clock: IReactorTime,
        config: WebhooksConfig,
        watcher: LoopWatcher | None = None,
        initialBackoff: float = 1.0,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self.outbox = outbox
        self.sender = sender
        self.clock = clock
        self.config = config
        self.lease = config.timeout_s + LEASE_MARGIN_S
        self.stats = WebhookStats()
        kwargs = {} if jitter is None else {"jitter": jitter}
        self._backoff = backoffPolicy(initialBackoff, config.max_backoff_s, factor=2.0, **kwargs)
        self._loop = Periodic("webhooks.deliver", self._poll, config.poll_s, clock, watcher)
        self._inFlight: dict[str, _InFlight] = {}
        self._claiming = False
        self._again = False
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self._loop.start(now=True)

    async def _poll(self) -> None:
        try:
            await self.claimRound()
        except DatabaseUnavailable:
            pass  # the outbox keeps everything; the next poll tries again

    async def claimRound(self) -> None:
        """
        Lease what is due, up to the free slots; again while a delivery
        finished meanwhile (its webhook's next event may be waiting).
        """
        if self._claiming:
            self._again = True
            return
        self._claiming = True
        try:
            self._again = True
            while self._again and not self._stopping:
                self._again = False
                free = self.config.concurrency - len(self._inFlight)
                if free <= 0:
                    return
                claims = await self.outbox.claim(free, self.lease)
                self.stats.claims += len(claims)
                if self._stopping:
                    await self.outbox.release(claims)
                    return
                for claim in claims:
                    self._begin(claim)
        finally:
            self._claiming = False

    def _begin(self, claim: Claim) -> None:
        flight = _InFlight(claim)
        self._inFlight[claim.deliveryID] = flight
        self.stats.in_flight = len(self._inFlight)
        flight.done = Deferred.fromCoroutine(self._deliver(flight))

    async def _deliver(self, flight: _InFlight) -> None:
        claim = flight.claim
        try:
            flight.sending = Deferred.fromCoroutine(self.sender.send(claim))
            try:
                outcome = await flight.sending
            except CancelledError:
                return
            finally:
                flight.sending = None
            if flight.cut:
                return  # the master is stopping: stop() gives the lease back
            state = await self.outbox.finish(
                claim, outcome, self._backoff(claim.attempts), self.config.retry_for_s
            )
            if outcome.delivered:
                self.stats.delivered += 1
            else:
                self.stats.failed_tries += 1
            if state == "failed":
                self.stats.given_up += 1
                log.warn(
                    "gave up delivering {event} {deliveryId} to webhook {webhookId} after"
                    " {attempts} tries: {error}",
                    event=claim.kind, deliveryId=claim.deliveryID, webhookId=claim.webhookID,
                    attempts=claim.attempts + 1, error=outcome.error,
                )  # fmt: skip
            elif not outcome.delivered:
                log.info(
                    "delivery {deliveryId} of {event} to webhook {webhookId} failed"
                    " (try {attempt}): {error}",
                    deliveryId=claim.deliveryID, event=claim.kind, webhookId=claim.webhookID,
                    attempt=claim.attempts + 1, error=outcome.error,
                )  # fmt: skip
        except DatabaseUnavailable:
            # The try is not recorded and the lease runs out: the delivery
            # is tried again, with the same id (at least once).
            log.warn("could not record delivery {deliveryId}: the database is unavailable",
                     deliveryId=claim.deliveryID)  # fmt: skip
        except Exception:
            self.stats.exceptions += 1
            log.failure("delivering {deliveryId} failed", deliveryId=claim.deliveryID)
        finally:
            self._inFlight.pop(claim.deliveryID, None)
            self.stats.in_flight = len(self._inFlight)
            if not self._stopping:
                self._kick()

    def _kick(self) -> None:
        d = Deferred.fromCoroutine(self._kicked())
        d.addErrback(lambda f: log.failure("a webhook claim round failed", f))

    async def _kicked(self) -> None:
        try:
            await self.claimRound()
        except DatabaseUnavailable:
            pass
        except Exception:
            self.stats.exceptions += 1
            log.failure("a webhook claim round failed; the next poll runs anyway")

    async def stop(self) -> None:
        """
        Stop polling, cut the tries under way and give their leases back
        (another master may deliver them at once, with the same ids); wait
        for the records being written.
        """
        self._stopping = True
        await self._loop.stop()
        flights = list(self._inFlight.values())
        cut = [f for f in flights if f.sending is not None]
        for flight in cut:
            assert flight.sending is not None
            flight.cut = True
            flight.sending.cancel()
        try:
            await self.outbox.release([f.claim for f in cut])
        except Exception as e:
            log.warn("could not give webhook leases back ({why}); they expire in {lease:g} s",
                     why=str(e) or type(e).__name__, lease=self.lease)  # fmt: skip
        for flight in flights:
            if flight.done is not None and not flight.done.called:
                await flight.done
