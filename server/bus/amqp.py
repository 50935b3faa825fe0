"""RabbitMQ transport: the confirmed publisher the relay uses, and the consumer queues.

Topology, per exchange ``X`` (durable topic, routing key = event type) and consumer ``C``:
- ``X.C``        durable queue bound to C's event types; manual ack after the work is done.
- ``X.C.retry``  holds a failed delivery for ``event_retry_delay_ms``, then dead-letters
                 it back to ``X.C`` (via the default exchange), with the attempt count in
                 the ``x-pulse-attempts`` header.
- ``X.C.dlq``    where a delivery goes after ``event_max_attempts`` failures (or when it is
                 not a domain event at all), for someone to inspect.
The retry and dead-letter queues have a message TTL of ``event_retention_days`` (like the
outbox rows): no parked payload, which may name a user erased since, outlives the
retention.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Sequence

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed

from kernel.settings import Settings
from server.bus.codec import decode_event, encode_event
from server.bus.processing import EventProcessor
from server.bus.types import Consumer, DomainEvent

log = logging.getLogger("pulse.events.amqp")

ATTEMPTS_HEADER = "x-pulse-attempts"
ERROR_HEADER = "x-pulse-error"


class BrokerUnavailable(ConnectionError):
    pass


def queue_name(exchange: str, consumer: Consumer) -> str:
    return f"{exchange}.{consumer.name}"


def parked_ttl_ms(settings: Settings) -> int:
    """How long a message may wait in a retry or dead-letter queue: the event retention."""
    return max(1, int(settings.event_retention_days * 86400 * 1000))


def parking_queue_arguments(settings: Settings, queue: str) -> dict[str, dict]:
    """The arguments of the retry and dead-letter queues of consumer queue ``queue``."""
    ttl = parked_ttl_ms(settings)
    return {
        queue + ".retry": {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue, "x-message-ttl": ttl},
        queue + ".dlq": {"x-message-ttl": ttl},
    }


def event_message(event: DomainEvent, headers: dict | None = None) -> aio_pika.Message:
    return aio_pika.Message(
        body=encode_event(event), message_id=event.id, type=event.type, content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT, headers=headers or {},
    )


class AmqpBroker:
    """One robust connection (it reconnects by itself and restores channels, exchanges,
    queues, bindings and consumers); a confirming channel for publishing."""

    def __init__(self, settings: Settings) -> None:
        assert settings.amqp_url, "amqp_url is required"
        self.settings = settings
        self.exchange_name = settings.amqp_exchange
        self.connection: AbstractRobustConnection | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None
        self.ready = asyncio.Event()

    async def connect(self) -> None:
        """Connect, retrying until the broker answers (the app starts without it)."""
        while self.connection is None:
            try:
                self.connection = await aio_pika.connect_robust(
                    self.settings.amqp_url, reconnect_interval=self.settings.amqp_reconnect_seconds,
                    client_properties={"connection_name": f"pulse:{self.settings.instance_id}"},
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep trying; the outbox holds events
                log.warning("RabbitMQ unavailable (%r); retrying in %.1fs", exc, self.settings.amqp_reconnect_seconds)
                await asyncio.sleep(self.settings.amqp_reconnect_seconds)
        channel = await self.connection.channel(publisher_confirms=True)
        self.exchange = await channel.declare_exchange(self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        self.ready.set()

    @property
    def connected(self) -> bool:
        return (self.ready.is_set() and self.connection is not None and not self.connection.is_closed
                and self.connection.connected.is_set())

    async def check(self) -> None:
        """Readiness: raises while the broker is unreachable."""
        if not self.connected:
            raise BrokerUnavailable("RabbitMQ is not connected")

    async def publish(self, event: DomainEvent) -> None:
        """Returns once the broker confirmed the (persistent) message; raises otherwise."""
        if not self.connected or self.exchange is None:
            raise BrokerUnavailable("RabbitMQ is not connected")
        await self.exchange.publish(event_message(event), routing_key=event.type, mandatory=False,
                                    timeout=self.settings.amqp_publish_timeout_seconds)

    async def publish_many(self, events: Sequence[DomainEvent]) -> set[str]:
        """The relay's sink: publishes concurrently (confirms are pipelined); returns the
        ids the broker confirmed."""
        results = await asyncio.gather(*(self.publish(e) for e in events), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("%d of %d events not confirmed by RabbitMQ: %r", len(failed), len(events), failed[0])
        return {e.id for e, r in zip(events, results) if not isinstance(r, BaseException)}

    async def start_consumer(self, consumer: Consumer, processor: EventProcessor) -> None:
        assert self.connection is not None
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=self.settings.amqp_prefetch)
        exchange = await channel.declare_exchange(self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        name = queue_name(self.exchange_name, consumer)
        queue = await channel.declare_queue(name, durable=True)
        for event_type in consumer.event_types:
            await queue.bind(exchange, routing_key=event_type)
        for parking, arguments in parking_queue_arguments(self.settings, name).items():
            await self._ensure_queue(parking, arguments)
            # Again on the consumer's channel (declared as it is now, so this cannot fail):
            # the robust channel re-declares it after a reconnection.
            await channel.declare_queue(parking, durable=True, arguments=arguments)
        await queue.consume(_Delivery(consumer, processor, channel, name, self.settings).on_message)
        log.info("consumer %s listening on %s", consumer.name, name)

    async def _ensure_queue(self, name: str, arguments: dict) -> None:
        """Declares a durable queue with ``arguments``, replacing one declared with other
        arguments by an earlier version (e.g. without the message TTL).

        RabbitMQ never changes the arguments of an existing queue: the declaration fails
        with PRECONDITION_FAILED (and the channel closes), so it is tried on a channel of
        its own. A policy would also do (``rabbitmqctl set_policy``), but it is operator
        configuration outside the app and the management API is not always there; instead
        the old queue's messages move to ``<name>.upgrade`` (declared with the new
        arguments), the old queue is deleted and declared anew, and the messages move back.
        A run interrupted half-way leaves them in ``<name>.upgrade``, which every start
        drains. Meanwhile an older instance may still forward to the old name: until it is
        replaced too, such a message finds no queue and is dropped, or recreates the old
        queue, which the next start replaces again."""
        assert self.connection is not None
        holding = name + ".upgrade"
        channel = await self.connection.channel()
        try:
            await channel.declare_queue(name, durable=True, arguments=arguments)
        except ChannelPreconditionFailed:
            log.warning("queue %s was declared with other arguments; replacing it with %s", name, arguments)
            await self._move_all(name, holding, arguments)
            channel = await self.connection.channel()
            await channel.queue_delete(name, if_empty=True)
            await channel.declare_queue(name, durable=True, arguments=arguments)
        finally:
            if not channel.is_closed:
                await channel.close()
        await self._move_all(holding, name, arguments, delete_source=True)

    async def _move_all(self, source: str, target: str, target_arguments: dict, *,
                        delete_source: bool = False) -> int:
        """Moves every message of ``source`` (when it exists) to ``target``: each one is
        published with a confirm before it is acked, so a crash duplicates, never loses."""
        assert self.connection is not None
        channel = await self.connection.channel(publisher_confirms=True)
        moved = 0
        try:
            try:
                queue = await channel.declare_queue(source, passive=True)
            except ChannelNotFoundEntity:
                return 0
            await channel.declare_queue(target, durable=True, arguments=target_arguments)
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                await channel.default_exchange.publish(aio_pika.Message(
                    body=message.body, message_id=message.message_id, type=message.type,
                    content_type=message.content_type, headers=message.headers,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT, expiration=message.expiration,
                ), routing_key=target)
                await message.ack()
                moved += 1
            if delete_source:
                await queue.delete(if_unused=False, if_empty=True)
        finally:
            if not channel.is_closed:
                await channel.close()
        if moved:
            log.info("moved %d messages from %s to %s", moved, source, target)
        return moved

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


class _Delivery:
    """Handles the deliveries of one consumer's queue."""

    def __init__(self, consumer: Consumer, processor: EventProcessor, channel, queue: str, settings: Settings) -> None:
        self.consumer = consumer
        self.processor = processor
        self.channel = channel
        self.queue = queue
        self.max_attempts = settings.event_max_attempts
        self.retry_delay_ms = settings.event_retry_delay_ms

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = decode_event(message.body)
        except ValueError as exc:
            log.error("%s: undecodable message %s sent to the dead-letter queue: %s",
                      self.consumer.name, message.message_id, exc)
            self.processor.count(self.consumer.name, "dead_letter")
            await self._forward(message, self.queue + ".dlq", attempts=0, error=str(exc))
            return
        try:
            await self.processor.process(self.consumer, event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
            attempts = int((message.headers or {}).get(ATTEMPTS_HEADER, 0) or 0) + 1
            error = f"{type(exc).__name__}: {exc}"[:500]
            self.processor.count(self.consumer.name, "dead_letter" if attempts >= self.max_attempts else "retry")
            if attempts >= self.max_attempts:
                log.error("%s: event %s (%s) failed %d times, dead-lettered: %s",
                          self.consumer.name, event.id, event.type, attempts, error)
                await self._forward(message, self.queue + ".dlq", attempts=attempts, error=error)
            else:
                log.warning("%s: event %s (%s) failed (attempt %d of %d), will retry: %s",
                            self.consumer.name, event.id, event.type, attempts, self.max_attempts, error)
                await self._forward(message, self.queue + ".retry", attempts=attempts, error=error,
                                    expiration_ms=self.retry_delay_ms * attempts)
            return
        await message.ack()

    async def _forward(self, message: AbstractIncomingMessage, queue: str, *, attempts: int, error: str,
                       expiration_ms: int | None = None) -> None:
        """Move the delivery to another queue: publish (confirmed) first, then ack, so a
        crash in between duplicates it rather than losing it."""
        headers = {**(message.headers or {}), ATTEMPTS_HEADER: attempts, ERROR_HEADER: error}
        copy = aio_pika.Message(
            body=message.body, message_id=message.message_id, type=message.type,
            content_type=message.content_type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, headers=headers,
            expiration=(expiration_ms / 1000) if expiration_ms else None,
        )
        try:
            await self.channel.default_exchange.publish(copy, routing_key=queue)
        except Exception as exc:  # noqa: BLE001 - could not move it: let the broker redeliver
            log.warning("%s: could not move message to %s (%r); requeueing", self.consumer.name, queue, exc)
            try:
                await message.nack(requeue=True)
            except Exception:  # noqa: BLE001 - channel gone: the broker redelivers anyway
                pass
            return
        await message.ack()
