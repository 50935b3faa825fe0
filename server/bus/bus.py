"""The event bus: outbox relay + transport + consumers, started and stopped as one.

With ``settings.amqp_url`` the relay publishes to RabbitMQ and the consumers read their
durable queues; without it (embedded mode) the relay hands events to the consumers
in-process. ``run_workers=False`` (an HTTP-only instance) keeps only the publisher-side
health check: another process (``pulse worker``) relays and consumes.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Sequence

from kernel.settings import Settings
from server.bus.amqp import AmqpBroker
from server.bus.inprocess import InProcessDispatcher
from server.bus.processing import EventProcessor
from server.bus.relay import OutboxRelay
from server.bus.types import Consumer
from storage.postgres.pool import Database
from storage.postgres.repos.outbox import OutboxRepo
from storage.postgres.repos.processed_events import ProcessedEventsRepo

if TYPE_CHECKING:
    from server.metrics import Metrics

log = logging.getLogger("pulse.events")


class EventBus:
    def __init__(self, db: Database, settings: Settings, consumers: Sequence[Consumer],
                 metrics: "Metrics | None" = None) -> None:
        names = [c.name for c in consumers]
        if len(names) != len(set(names)):
            raise ValueError(f"two consumers share a name: {sorted(names)}")
        self.db = db
        self.settings = settings
        self.consumers = list(consumers)
        self.processor = EventProcessor(db, metrics)
        self.broker = AmqpBroker(settings) if settings.amqp_url else None
        self.dispatcher = None if self.broker else InProcessDispatcher(
            self.consumers, self.processor, max_attempts=settings.event_max_attempts,
            retry_delay_ms=settings.event_retry_delay_ms)
        sink = self.broker.publish_many if self.broker else self.dispatcher.dispatch_many
        assert settings.postgres_dsn
        self.relay = OutboxRelay(db, settings.postgres_dsn, sink, batch_size=settings.outbox_batch_size,
                                 poll_seconds=settings.outbox_poll_seconds, metrics=metrics)
        self._tasks: list[asyncio.Task] = []
        # Set once the consumers listen (their queues exist) and the relay runs.
        self.running = asyncio.Event()

    async def start(self, *, run_workers: bool = True) -> None:
        """Connecting and relaying go on in the background; this waits a few seconds for
        them to be up (so a fresh instance is ready at once), not for a broker that is down."""
        if run_workers:
            self._tasks.append(asyncio.create_task(self._run(), name="event-bus"))
            started = self.running
        elif self.broker is not None:
            self._tasks.append(asyncio.create_task(self.broker.connect(), name="amqp-connect"))
            started = self.broker.ready
        else:
            return
        try:
            await asyncio.wait_for(asyncio.shield(started.wait()), self.settings.amqp_publish_timeout_seconds)
        except asyncio.TimeoutError:
            log.warning("event bus not up yet (broker unreachable?); continuing to connect in the background")

    async def _run(self) -> None:
        if self.broker is not None:
            await self.broker.connect()
            for consumer in self.consumers:
                await self.broker.start_consumer(consumer, self.processor)
        self.running.set()
        self._tasks.append(asyncio.create_task(self._prune_periodically(), name="event-prune"))
        log.info("event bus running: %s, consumers: %s", "RabbitMQ" if self.broker else "in-process",
                 ", ".join(c.name for c in self.consumers) or "none")
        await self.relay.run()

    async def prune(self) -> tuple[int, int]:
        """Forget published outbox rows and processed-event records past the retention."""
        seconds = self.settings.event_retention_days * 86400
        async with self.db.connection() as conn:
            outbox = await OutboxRepo().delete_published_before(conn, seconds)
            processed = await ProcessedEventsRepo().delete_older_than(conn, seconds)
        return outbox, processed

    async def _prune_periodically(self) -> None:
        while True:
            try:
                outbox, processed = await self.prune()
                if outbox or processed:
                    log.info("pruned %d outbox rows, %d processed-event records", outbox, processed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - try again next time
                log.warning("event pruning failed: %r", exc)
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.broker is not None:
            await self.broker.close()
