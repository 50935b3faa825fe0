"""The outbox relay: moves committed domain events from the outbox to a sink (the AMQP
publisher, or the in-process dispatcher in embedded mode).

Each batch is read ``FOR UPDATE SKIP LOCKED`` inside a transaction, so relays on several
instances share the work without taking the same row; a row is marked published only
after the sink confirmed it, in the same transaction that holds its lock. A sink failure
(broker down) leaves the row for a later pass: events are delivered at least once.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence

import asyncpg

from server.bus.codec import event_from_outbox_row
from server.bus.types import FORGOTTEN_ON_DELIVERY, DomainEvent
from storage.postgres.pool import Database
from storage.postgres.repos.outbox import OUTBOX_CHANNEL, OutboxRepo

if TYPE_CHECKING:
    from server.metrics import Metrics

log = logging.getLogger("pulse.events.relay")

# Delivers events; returns the ids the sink confirmed (others stay in the outbox).
Sink = Callable[[Sequence[DomainEvent]], Awaitable[set[str]]]


class OutboxRelay:
    def __init__(self, db: Database, dsn: str, sink: Sink, *, batch_size: int = 100,
                 poll_seconds: float = 1.0, metrics: "Metrics | None" = None) -> None:
        self.db = db
        self.metrics = metrics
        self.dsn = dsn
        self.sink = sink
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.outbox_repo = OutboxRepo()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Starts a pass now (a NOTIFY arrived) instead of at the next poll."""
        self._wake.set()

    async def relay_batch(self) -> tuple[int, int]:
        """One pass: returns (rows taken, rows delivered)."""
        async with self.db.transaction() as conn:
            rows = await self.outbox_repo.lock_unpublished(conn, self.batch_size)
            if not rows:
                return 0, 0
            events = [event_from_outbox_row(r) for r in rows]
            try:
                delivered = await self.sink(events)
            except Exception as exc:  # noqa: BLE001 - the sink failing keeps the rows
                log.warning("outbox relay: delivery of %d events failed: %r", len(events), exc)
                delivered = set()
            done = [r for r in rows if str(r["id"]) in delivered]
            forgotten = [r["id"] for r in done if r["event_type"] in FORGOTTEN_ON_DELIVERY]
            kept = [r["id"] for r in done if r["event_type"] not in FORGOTTEN_ON_DELIVERY]
            if kept:
                await self.outbox_repo.mark_published(conn, kept)
            if forgotten:
                await self.outbox_repo.delete_delivered(conn, forgotten)
        if done and self.metrics is not None:
            self._count_published(done)
        return len(rows), len(done)

    def _count_published(self, rows: Sequence[asyncpg.Record]) -> None:
        now = datetime.now(timezone.utc)
        for row in rows:
            self.metrics.events_published.labels(row["event_type"]).inc()
            self.metrics.outbox_lag_seconds.observe(max(0.0, (now - row["created_at"]).total_seconds()))

    async def run(self) -> None:
        """Relay until cancelled: woken by NOTIFY, polling as a fallback."""
        listener = asyncio.create_task(self._listen(), name="outbox-listener")
        try:
            while True:
                self._wake.clear()
                try:
                    taken, delivered = await self.relay_batch()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - PostgreSQL down: try again later
                    log.warning("outbox relay pass failed: %r", exc)
                    taken, delivered = 0, 0
                    await asyncio.sleep(self.poll_seconds)
                    continue
                if delivered < taken:
                    # The sink is failing: do not spin on notifications; retry after a pause.
                    await asyncio.sleep(self.poll_seconds)
                    continue
                if taken == self.batch_size:
                    continue  # more may be waiting
                # Not asyncio.wait_for: before Python 3.12 it swallows a cancellation that
                # arrives just after the wake-up (the relay then never stops).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_seconds):
                        await self._wake.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self) -> None:
        """LISTEN on a dedicated connection (a pooled one could be reset or reused)."""
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(dsn=self.dsn, timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c: lost.set())
                await conn.add_listener(OUTBOX_CHANNEL, lambda *_args: self.wake())
                self.wake()  # catch up on whatever was inserted while not listening
                await lost.wait()
                log.warning("outbox LISTEN connection lost; relying on polling until it is back")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - polling covers for the listener
                log.warning("outbox LISTEN failed (%r); relying on polling", exc)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(max(self.poll_seconds, 1.0) * 5)
