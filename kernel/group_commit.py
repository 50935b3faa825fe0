"""Group commit: what is submitted while a write is in flight goes together in the next one.

``GroupCommit(flush, max_items=n)``: ``submit(item)`` returns a future of that item's
outcome. With nothing in flight a flush starts at once (on the loop's next turn, so items
submitted in the same turn share it: no added latency when idle); while one is in flight,
items queue and the next flush takes up to ``max_items`` of them, in submission order. One
flush runs at a time, so flushes, and the items across them, keep submission order.

``flush(items)`` returns one outcome per item; an exception instance among them fails that
item's future alone. If ``flush`` raises, every item of that flush fails with the error.
An item whose future was cancelled before its flush (its caller gave up) is left out.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]], *,
                 max_items: int, name: str) -> None:
        self._flush = flush
        self.max_items = max(1, max_items)
        self.name = name
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._runner: asyncio.Task[None] | None = None
        self.flushes = 0  # flushes run (tests and metrics read it)

    def submit(self, item: T) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"pulse-group-commit-{self.name}")
        return future

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def drain(self) -> None:
        """Waits until everything submitted so far has been flushed."""
        while self._runner is not None:
            await asyncio.shield(self._runner)

    async def _run(self) -> None:
        try:
            while self._queue:
                batch = []
                while self._queue and len(batch) < self.max_items:
                    item, future = self._queue.popleft()
                    if not future.done():
                        batch.append((item, future))
                if batch:
                    await self._flush_one(batch)
        finally:
            self._runner = None
            # Cancelled (the loop is closing): nothing will flush what is still queued.
            while self._queue:
                _, future = self._queue.popleft()
                if not future.done():
                    future.set_exception(RuntimeError(f"{self.name}: stopped before this item was written"))

    async def _flush_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.flushes += 1
        try:
            outcomes = await self._flush([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{self.name}: {len(outcomes)} outcomes for {len(batch)} items")
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError(f"{self.name}: stopped while writing this item"))
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(batch, outcomes):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
