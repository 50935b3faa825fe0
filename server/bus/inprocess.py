"""Embedded mode (no broker): the relay hands events to the consumers in this process,
through the same idempotent processing, with the same bounded retry; an event that still
fails is logged as dead-lettered."""
from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from server.bus.processing import EventProcessor
from server.bus.types import Consumer, DomainEvent

log = logging.getLogger("pulse.events.inprocess")


class InProcessDispatcher:
    def __init__(self, consumers: Sequence[Consumer], processor: EventProcessor, *, max_attempts: int = 5,
                 retry_delay_ms: int = 1000) -> None:
        self.consumers = list(consumers)
        self.processor = processor
        self.max_attempts = max_attempts
        self.retry_delay_ms = retry_delay_ms
        self.dead_lettered: list[tuple[str, DomainEvent, str]] = []

    async def dispatch_many(self, events: Sequence[DomainEvent]) -> set[str]:
        """The relay's sink. Events go one after another (in outbox order); the consumers
        of one event run side by side. Every event counts as delivered once each of its
        consumers succeeded or gave up."""
        for event in events:
            targets = [c for c in self.consumers if event.type in c.event_types]
            await asyncio.gather(*(self._deliver(c, event) for c in targets))
        return {e.id for e in events}

    async def _deliver(self, consumer: Consumer, event: DomainEvent) -> None:
        for attempt in range(1, self.max_attempts + 1):
            try:
                await self.processor.process(consumer, event)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried, then dead-lettered
                error = f"{type(exc).__name__}: {exc}"
                if attempt == self.max_attempts:
                    self.processor.count(consumer.name, "dead_letter")
                    log.error("%s: event %s (%s) failed %d times, dead-lettered: %s",
                              consumer.name, event.id, event.type, attempt, error)
                    self.dead_lettered.append((consumer.name, event, error))
                    del self.dead_lettered[:-1000]
                    return
                self.processor.count(consumer.name, "retry")
                log.warning("%s: event %s (%s) failed (attempt %d of %d): %s",
                            consumer.name, event.id, event.type, attempt, self.max_attempts, error)
                await asyncio.sleep(self.retry_delay_ms * attempt / 1000)
