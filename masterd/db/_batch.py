"""
Group commit: small operations that arrive close together share one
transaction.

Each commit of a small transaction costs a round trip and a WAL flush, which
bound how many task reports and claims a master can write per second. The
batcher runs everything submitted while the previous batch was being written
in the next single transaction, in submission order: no artificial delay, and
under load the batches grow by themselves. If a batch fails for any reason
but a lost database, its operations are retried one by one, each in its own
transaction, so that one bad operation cannot fail the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ._pool import DatabaseUnavailable, Pool, Transaction

T = TypeVar("T")
Operation = Callable[[Transaction], Awaitable[Any]]

log = Logger()


class Batcher:
    def __init__(self, pool: Pool, maxBatch: int = 500) -> None:
        self._pool = pool
        self._maxBatch = maxBatch
        self._pending: list[tuple[Operation, Deferred[Any]]] = []
        self._running = False
        self.batches = 0
        self.operations = 0

    def submit(self, operation: Callable[[Transaction], Awaitable[T]]) -> Deferred[T]:
        """
        Run C{operation} in the next batch; fires with its result once that
        batch has committed.
        """
        done: Deferred[T] = Deferred()
        self._pending.append((operation, done))
        if not self._running:
            self._running = True
            Deferred.fromCoroutine(self._drain())
        return done

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._maxBatch]
                del self._pending[: self._maxBatch]
                await self._run(batch)
        finally:
            self._running = False

    async def _run(self, batch: list[tuple[Operation, Deferred[Any]]]) -> None:
        self.batches += 1
        self.operations += len(batch)

        async def work(txn: Transaction) -> list[Any]:
            return [await operation(txn) for operation, _ in batch]

        try:
            results = await self._pool.transaction(work)
        except DatabaseUnavailable as e:
            for _, done in batch:
                done.errback(e)
            return
        except Exception:
            if len(batch) == 1:
                batch[0][1].errback()
                return
            log.warn("a batch of {count} failed; retrying one by one", count=len(batch))
            for operation, done in batch:
                try:
                    result = await self._pool.transaction(operation)
                except BaseException:
                    done.errback()
                else:
                    done.callback(result)
            return
        for (_, done), result in zip(batch, results, strict=True):
            done.callback(result)
