"""
Group commit: small operations that arrive close together share one
transaction.

Each commit of a small transaction costs a round trip and a WAL flush, which
bound how many task reports and claims a master can write per second. The
batcher runs everything submitted while the previous batch was being written
(and while the next one's BEGIN was on its way) in the next single
transaction: no artificial delay, and under load the batches grow by
themselves. In a batch, grouped items (set-based task reports) run first,
then single operations (claims) in the order they came. If a batch fails for any reason
but a lost database, its operations are retried one by one, each in its own
transaction, so that one bad operation cannot fail the others.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from masterd.stats import SchedulingStats

from ._pool import CONFLICT_RETRIES, DatabaseUnavailable, Pool, Transaction, TransactionConflict

T = TypeVar("T")
ItemT = TypeVar("ItemT")
Operation = Callable[[Transaction], Awaitable[Any]]
#: Runs many items of one kind in one go: their results, in order.
GroupRunner = Callable[[Transaction, list[Any]], Awaitable[list[Any]]]
#: An operation or a grouped runner, its item (or _SINGLE), its result.
_Entry = tuple[Any, Any, Deferred[Any]]

log = Logger()


class Batcher:
    def __init__(
        self,
        pool: Pool,
        maxBatch: int = 500,
        stats: SchedulingStats | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._pool = pool
        self._maxBatch = maxBatch
        self._stats = stats
        self._timer = timer
        self._pending: list[_Entry] = []
        self._running = False
        self.batches = 0
        self.operations = 0

    def submit(self, operation: Callable[[Transaction], Awaitable[T]]) -> Deferred[T]:
        """
        Run C{operation} in the next batch; fires with its result once that
        batch has committed.
        """
        done: Deferred[T] = Deferred()
        self._pending.append((operation, _SINGLE, done))
        self._start()
        return done

    def submitGrouped(
        self,
        runner: Callable[[Transaction, list[ItemT]], Awaitable[list[T]]],
        item: ItemT,
        first: bool = False,
    ) -> Deferred[T]:
        """
        Run C{item} with every other item for the same C{runner} in the next
        batch, in one call of C{runner} (one set-based statement instead of
        one per item); fires with C{item}'s result. Groups submitted with
        C{first} run before the others of their batch.
        """
        done: Deferred[T] = Deferred()
        self._pending.append(((runner, first), item, done))
        self._start()
        return done

    def _start(self) -> None:
        if not self._running:
            self._running = True
            Deferred.fromCoroutine(self._drain())

    def _take(self) -> list[_Entry]:
        batch = self._pending[: self._maxBatch]
        del self._pending[: self._maxBatch]
        return batch

    async def _drain(self) -> None:
        try:
            while self._pending:
                await self._run()
        finally:
            self._running = False

    async def _run(self, batch: list[_Entry] | None = None) -> None:
        """
        Write C{batch} in one transaction. Without one, take the next batch
        only once the transaction has begun, so that whatever arrived during
        BEGIN rides along instead of waiting a whole batch.
        """
        taken: list[_Entry] = [] if batch is None else batch

        async def work(txn: Transaction) -> list[Any]:
            if batch is None:
                await txn.begin()
                taken.extend(self._take())
            return await self._apply(txn, taken)

        began = self._timer()
        try:
            # A batch this call takes is not run again by the pool on a
            # conflict (its work has taken it off the queue): it is run
            # again one by one below, and those the pool may run again.
            results = await self._pool.transaction(
                work, conflictRetries=0 if batch is None else CONFLICT_RETRIES
            )
        except TransactionConflict as e:
            if batch is not None:
                for _, _, done in taken:
                    done.errback(e)
                return
            log.info("a batch of {count} conflicted; retrying one by one", count=len(taken))
            for entry in taken or self._take():
                await self._run([entry])
            return
        except DatabaseUnavailable as e:
            for _, _, done in taken or self._take():
                done.errback(e)
            return
        except Exception:
            if len(taken) <= 1:
                # One operation failed; or the transaction failed before the
                # batch was taken, and nothing of it ran.
                for _, _, done in taken or self._take():
                    done.errback()
                return
            log.warn("a batch of {count} failed; retrying one by one", count=len(taken))
            for entry in taken:
                await self._run([entry])
            return
        if self._stats is not None:
            self._stats.batch(len(taken), self._timer() - began)
        self._finish(taken, results)

    def _finish(self, batch: list[_Entry], results: list[Any]) -> None:
        self.batches += 1
        self.operations += len(batch)
        for (_, _, done), result in zip(batch, results, strict=True):
            done.callback(result)

    async def _apply(self, txn: Transaction, batch: list[_Entry]) -> list[Any]:
        results: list[Any] = [None] * len(batch)
        groups: dict[Any, list[int]] = {}
        singles: list[int] = []
        for i, (runner, item, _) in enumerate(batch):
            if item is _SINGLE:
                singles.append(i)
            else:
                groups.setdefault(runner, []).append(i)
        # Grouped items first (those asked to run first, then the others:
        # log lines before task reports), then single operations (claims) in
        # the order they came: a claim sees the slots freed by the reports of
        # its own batch.
        for runner, first in sorted(groups, key=lambda key: not key[1]):
            indexes = groups[runner, first]
            for i, result in zip(
                indexes, await runner(txn, [batch[i][1] for i in indexes]), strict=True
            ):
                results[i] = result
        for i in singles:
            results[i] = await batch[i][0](txn)
        return results


_SINGLE = object()
