"""Runs a consumer's handler at most once per event id (per consumer).

The processed_events table remembers which ids a consumer has handled: an id seen
before is skipped, and an id is recorded only after the handler succeeded (a failure
leaves it free for the retry). Handlers must still be idempotent: a crash between the
handler's effect and the record means one more run.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from uuid import UUID

from server.bus.types import Consumer, DomainEvent
from storage.postgres.pool import Database
from storage.postgres.repos.processed_events import ProcessedEventsRepo

if TYPE_CHECKING:
    from server.metrics import Metrics

log = logging.getLogger("pulse.events")


class EventProcessor:
    def __init__(self, db: Database, metrics: "Metrics | None" = None) -> None:
        self.db = db
        self.metrics = metrics
        self.processed_repo = ProcessedEventsRepo()
        # (consumer, event id) being handled in this process: a duplicate delivered
        # meanwhile waits for the retry instead of running the handler a second time.
        self._in_flight: set[tuple[str, str]] = set()

    async def process(self, consumer: Consumer, event: DomainEvent) -> bool:
        """Handle the event once; False when this consumer had already handled it.
        Raises what the handler raised (the caller retries or dead-letters)."""
        event_id = UUID(event.id)
        key = (consumer.name, event.id)
        async with self.db.read() as conn:
            if await self.processed_repo.was_processed(conn, consumer.name, event_id):
                self.count(consumer.name, "duplicate")
                return False
        if key in self._in_flight:
            raise DuplicateInFlight(f"{consumer.name} is already handling event {event.id}")
        self._in_flight.add(key)
        try:
            await consumer.handle(event)
            async with self.db.connection() as conn:
                await self.processed_repo.record(conn, consumer.name, event_id)
        finally:
            self._in_flight.discard(key)
        self.count(consumer.name, "ok")
        return True

    def count(self, consumer_name: str, outcome: str) -> None:
        """One outcome for /metrics: ok, duplicate, retry or dead_letter (the last two are
        decided by the transport that retries)."""
        if self.metrics is not None:
            self.metrics.events_consumed.labels(consumer_name, outcome).inc()


class DuplicateInFlight(RuntimeError):
    """The same event is being handled right now; try again after it is done."""
