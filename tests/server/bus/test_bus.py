"""The event bus against real PostgreSQL and RabbitMQ: relay, confirms, consumers,
idempotency, retry and dead-lettering, SKIP LOCKED relays, embedded dispatch, and a
broker outage. Each test uses event types and consumer names of its own."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator
from urllib.parse import unquote, urlsplit

import aio_pika
import pytest
import pytest_asyncio

from kernel.timefmt import iso, utcnow
from loadtest.namespaces import rabbitmqctl
from server.bus.amqp import ATTEMPTS_HEADER, parked_ttl_ms, queue_name
from server.bus.bus import EventBus
from server.bus.relay import OutboxRelay
from server.bus.types import Consumer, DomainEvent
from server.metrics import Metrics
from storage.postgres.migrate import apply_migrations
from storage.postgres.pool import Database
from storage.postgres.repos.outbox import OutboxRepo
from tests.helpers.app import make_settings
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="session")
def bus_dsn(make_pg_database) -> str:
    """A database of the bus tests' own, so the app's relay never takes these rows."""
    from tests.helpers.waiting import run_sync

    dsn = make_pg_database("_bus")
    run_sync(apply_migrations(dsn))
    return dsn


@pytest.fixture(scope="session")
def bus_vhost_url(make_amqp_vhost) -> str:
    return make_amqp_vhost("_bus")


def bus_settings(dsn: str, amqp_url: str | None, **overrides):
    base = dict(postgres_dsn=dsn, amqp_url=amqp_url, amqp_exchange="test.events", outbox_poll_seconds=0.2,
                event_retry_delay_ms=50, event_max_attempts=3, amqp_reconnect_seconds=0.5,
                amqp_publish_timeout_seconds=2.0)
    base.update(overrides)
    return make_settings(**base)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def bus_db(bus_dsn) -> AsyncIterator[Database]:
    db = await Database.connect(bus_settings(bus_dsn, None))
    yield db
    await db.close()


@asynccontextmanager
async def running_bus(db: Database, settings, consumers, metrics: Metrics | None = None) -> AsyncIterator[EventBus]:
    bus = EventBus(db, settings, consumers, metrics)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()


def consumed(metrics: Metrics, rec: "Recorder", outcome: str) -> float:
    return metrics.registry.get_sample_value(
        "pulse_events_consumed_total", {"consumer": rec.consumer.name, "outcome": outcome}) or 0


async def add_events(db: Database, event_type: str, payloads: list[dict]) -> list[str]:
    async with db.transaction() as conn:
        return [str(await OutboxRepo().add(conn, event_type, p)) for p in payloads]


async def published_at(db: Database, event_id: str):
    async with db.read() as conn:
        return await conn.fetchval("SELECT published_at FROM outbox WHERE id = $1", uuid.UUID(event_id))


class Recorder:
    """A consumer that remembers what it handled (its effect), optionally failing."""

    def __init__(self, event_type: str, fail: bool = False) -> None:
        self.seen: list[DomainEvent] = []
        self.calls = 0
        self.fail = fail
        self.consumer = Consumer(name=f"rec-{uuid.uuid4().hex[:8]}", event_types=(event_type,), handle=self.handle)

    async def handle(self, event: DomainEvent) -> None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("this handler always fails")
        self.seen.append(event)


def new_type() -> str:
    return f"test.{uuid.uuid4().hex[:8]}"


async def test_outbox_events_are_published_and_consumed_then_marked(bus_db, bus_dsn, bus_vhost_url):
    etype = new_type()
    rec = Recorder(etype)
    metrics = Metrics()
    async with running_bus(bus_db, bus_settings(bus_dsn, bus_vhost_url), [rec.consumer], metrics) as bus:
        await asyncio.wait_for(bus.running.wait(), 30)
        ids = await add_events(bus_db, etype, [{"n": i} for i in range(5)])
        await eventually(lambda: len(rec.seen) == 5)
        assert sorted(e.id for e in rec.seen) == sorted(ids)
        assert {e.payload["n"] for e in rec.seen} == set(range(5))
        assert all(e.type == etype and e.created_at.endswith("Z") for e in rec.seen)
        for event_id in ids:
            assert await eventually(lambda: published_at(bus_db, event_id)) is not None
        await bus.broker.check()  # ready while connected
        await eventually(lambda: consumed(metrics, rec, "ok") == 5)
    assert metrics.registry.get_sample_value("pulse_events_published_total", {"event_type": etype}) == 5
    assert metrics.registry.get_sample_value("pulse_outbox_lag_seconds_count") == 5


async def test_duplicate_delivery_changes_nothing(bus_db, bus_dsn, bus_vhost_url):
    etype = new_type()
    rec = Recorder(etype)
    settings = bus_settings(bus_dsn, bus_vhost_url)
    async with running_bus(bus_db, settings, [rec.consumer]) as bus:
        results: list[bool] = []
        real_process = bus.processor.process

        async def counting_process(consumer, event):
            outcome = await real_process(consumer, event)
            results.append(outcome)
            return outcome

        bus.processor.process = counting_process
        await asyncio.wait_for(bus.running.wait(), 30)  # the consumer's queue exists
        event = DomainEvent(id=str(uuid.uuid4()), type=etype, payload={"x": 1}, created_at=iso(utcnow()))
        await bus.broker.publish(event)
        await eventually(lambda: results.count(True) == 1)
        await bus.broker.publish(event)  # the same event id again: redelivery
        await eventually(lambda: results.count(False) >= 1)  # the second delivery was skipped
        assert rec.calls == 1 and [e.id for e in rec.seen] == [event.id]


async def test_failing_handler_is_retried_then_dead_lettered(bus_db, bus_dsn, bus_vhost_url):
    etype = new_type()
    rec = Recorder(etype, fail=True)
    settings = bus_settings(bus_dsn, bus_vhost_url, event_max_attempts=3)
    metrics = Metrics()
    async with running_bus(bus_db, settings, [rec.consumer], metrics) as bus:
        await asyncio.wait_for(bus.running.wait(), 30)
        [event_id] = await add_events(bus_db, etype, [{"doomed": True}])
        await eventually(lambda: rec.calls >= 3)
        connection = await aio_pika.connect(bus_vhost_url)
        try:
            channel = await connection.channel()
            dlq = await channel.declare_queue(queue_name(settings.amqp_exchange, rec.consumer) + ".dlq", passive=True)

            async def dead_letter():
                return await dlq.get(fail=False, no_ack=False)

            message = await eventually(dead_letter)
            assert message.message_id == event_id
            assert message.headers[ATTEMPTS_HEADER] == 3
            await message.ack()
        finally:
            await connection.close()
        assert rec.calls == 3  # bounded: no further attempts after the dead letter
        assert (consumed(metrics, rec, "retry"), consumed(metrics, rec, "dead_letter")) == (2, 1)
        async with bus_db.read() as conn:
            assert not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_id = $1)",
                                           uuid.UUID(event_id))


async def test_parallel_relays_publish_each_row_once(bus_db, bus_dsn):
    etype = new_type()
    ids = await add_events(bus_db, etype, [{"i": i} for i in range(300)])
    delivered: list[str] = []

    async def slow_sink(events):
        await asyncio.sleep(0.01)  # keep the locks held so the relays overlap
        delivered.extend(e.id for e in events if e.type == etype)
        return {e.id for e in events}

    relays = [OutboxRelay(bus_db, bus_dsn, slow_sink, batch_size=20) for _ in range(4)]

    async def drain(relay: OutboxRelay) -> int:
        passes = 0
        while (await relay.relay_batch())[0]:
            passes += 1
        return passes

    passes = await asyncio.gather(*(drain(r) for r in relays))
    assert sorted(delivered) == sorted(ids)  # every row, none twice
    assert sum(1 for p in passes if p) > 1  # the work really was shared
    async with bus_db.read() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE id = ANY($1::uuid[]) AND published_at IS NULL",
                                   [uuid.UUID(i) for i in ids]) == 0


async def test_relay_stops_when_cancelled_right_after_a_wake_up(bus_db, bus_dsn):
    """An app shutting down as a NOTIFY arrives cancels its relay within the few loop
    iterations after the wake-up: the relay must stop all the same (asyncio.wait_for
    swallowed such a cancellation before Python 3.12, and the app's shutdown then waited
    for the relay for ever)."""
    async def sink(events):
        return {e.id for e in events}

    for iterations_after_wake_up in range(4):
        relay = OutboxRelay(bus_db, bus_dsn, sink, poll_seconds=30)  # only a wake-up ends its wait
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(1.0)  # listening, its catch-up pass done: it waits for a wake-up
        relay.wake()
        for _ in range(iterations_after_wake_up):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        if not done:
            task.cancel()  # once more, so the relay does not outlive this test
            await asyncio.wait({task}, timeout=10)
        assert done, f"the relay went on after a cancellation {iterations_after_wake_up} iterations after a wake-up"


async def test_embedded_mode_dispatches_in_process_once(bus_db, bus_dsn):
    etype = new_type()
    rec = Recorder(etype)
    settings = bus_settings(bus_dsn, None)
    async with running_bus(bus_db, settings, [rec.consumer]) as bus:
        assert bus.broker is None
        [event_id] = await add_events(bus_db, etype, [{"k": "v"}])
        await eventually(lambda: len(rec.seen) == 1)
        assert rec.seen[0].id == event_id and rec.seen[0].payload == {"k": "v"}
        assert await eventually(lambda: published_at(bus_db, event_id)) is not None
        # A redelivery (e.g. a relay that crashed before marking the row) is skipped.
        await bus.dispatcher.dispatch_many([rec.seen[0]])
        assert rec.calls == 1


async def test_embedded_mode_retries_then_gives_up(bus_db, bus_dsn):
    etype = new_type()
    rec = Recorder(etype, fail=True)
    settings = bus_settings(bus_dsn, None, event_max_attempts=2)
    metrics = Metrics()
    async with running_bus(bus_db, settings, [rec.consumer], metrics) as bus:
        [event_id] = await add_events(bus_db, etype, [{}])
        await eventually(lambda: bus.dispatcher.dead_lettered)
        assert rec.calls == 2 and bus.dispatcher.dead_lettered[0][1].id == event_id
        assert (consumed(metrics, rec, "retry"), consumed(metrics, rec, "dead_letter")) == (1, 1)
        assert await eventually(lambda: published_at(bus_db, event_id)) is not None


async def test_event_survives_a_broker_outage(bus_db, bus_dsn, make_amqp_vhost):
    """RabbitMQ refuses this vhost (permissions cleared, connections closed): writes still
    commit, the outbox keeps the event, and it is published once the broker is back."""
    url = make_amqp_vhost("_outage")
    vhost = unquote(urlsplit(url).path.lstrip("/"))
    etype = new_type()
    rec = Recorder(etype)
    async with running_bus(bus_db, bus_settings(bus_dsn, url), [rec.consumer]) as bus:
        await asyncio.wait_for(bus.running.wait(), 30)
        await add_events(bus_db, etype, [{"before": True}])
        await eventually(lambda: len(rec.seen) == 1)

        rabbitmqctl("clear_permissions", "-p", vhost, "guest")
        rabbitmqctl("close_all_connections", "--vhost", vhost, "test: broker outage")
        try:
            await eventually(lambda: not bus.broker.connected)
            with pytest.raises(Exception):
                await bus.broker.check()
            [event_id] = await add_events(bus_db, etype, [{"during": True}])  # the write commits
            # Several relay passes go by: the event stays in the outbox, unpublished.
            await asyncio.sleep(1.5)
            assert await published_at(bus_db, event_id) is None
            assert len(rec.seen) == 1
        finally:
            rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

        await eventually(lambda: len(rec.seen) == 2, timeout=60)
        assert rec.seen[1].id == event_id and rec.seen[1].payload == {"during": True}
        assert await eventually(lambda: published_at(bus_db, event_id), timeout=30) is not None


async def test_prune_forgets_old_published_rows_and_records_only(bus_db, bus_dsn):
    etype = new_type()
    old_published, old_pending, recent = await add_events(bus_db, etype, [{}, {}, {}])
    old_record, recent_record = uuid.uuid4(), uuid.uuid4()
    async with bus_db.transaction() as conn:
        await conn.execute("UPDATE outbox SET published_at = now() - interval '8 days' WHERE id = $1",
                           uuid.UUID(old_published))
        await conn.execute("UPDATE outbox SET published_at = now() WHERE id = $1", uuid.UUID(recent))
        await conn.execute("INSERT INTO processed_events (consumer, event_id, processed_at) VALUES "
                           "('prune-test', $1, now() - interval '8 days'), ('prune-test', $2, now())",
                           old_record, recent_record)
    bus = EventBus(bus_db, bus_settings(bus_dsn, None, event_retention_days=7), [])
    outbox, processed = await bus.prune()
    assert outbox >= 1 and processed >= 1
    async with bus_db.read() as conn:
        left = {str(r["id"]) for r in await conn.fetch("SELECT id FROM outbox WHERE event_type = $1", etype)}
        records = {r["event_id"] for r in await conn.fetch(
            "SELECT event_id FROM processed_events WHERE consumer = 'prune-test'")}
    assert left == {old_pending, recent}  # an unpublished row is never pruned
    assert records == {recent_record}


def queue_arguments(amqp_url: str) -> dict[str, dict]:
    """Each queue of the vhost and its arguments, as the broker reports them."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl to read queue arguments")
    vhost = unquote(urlsplit(amqp_url).path[1:])
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "arguments", "--formatter", "json"],
                         check=True, capture_output=True, timeout=60, text=True).stdout
    return {q["name"]: {name: value for name, _kind, value in q["arguments"]} for q in json.loads(out)}


async def test_retry_and_dead_letter_queues_keep_messages_no_longer_than_the_retention(
        bus_db, bus_dsn, bus_vhost_url):
    rec = Recorder(new_type())
    settings = bus_settings(bus_dsn, bus_vhost_url, event_retention_days=0.5)
    async with running_bus(bus_db, settings, [rec.consumer]) as bus:
        await asyncio.wait_for(bus.running.wait(), 30)
        queue = queue_name(settings.amqp_exchange, rec.consumer)
        arguments = queue_arguments(bus_vhost_url)
    assert arguments[queue + ".dlq"] == {"x-message-ttl": 12 * 3600 * 1000}
    assert arguments[queue + ".retry"] == {"x-message-ttl": 12 * 3600 * 1000, "x-dead-letter-exchange": "",
                                           "x-dead-letter-routing-key": queue}
    assert "x-message-ttl" not in arguments[queue]  # the work queue keeps its messages


async def test_parking_queues_declared_without_a_ttl_are_replaced_keeping_their_messages(
        bus_db, bus_dsn, bus_vhost_url):
    """An upgrade: the queues exist as an earlier version declared them (no TTL), with a
    dead letter in them. RabbitMQ refuses to change a queue's arguments; the start
    replaces them and the dead letter survives."""
    rec = Recorder(new_type())
    settings = bus_settings(bus_dsn, bus_vhost_url)
    queue = queue_name(settings.amqp_exchange, rec.consumer)
    connection = await aio_pika.connect(bus_vhost_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue + ".retry", durable=True, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue})
        await channel.declare_queue(queue + ".dlq", durable=True)
        await channel.default_exchange.publish(aio_pika.Message(b"parked", message_id="old-dead-letter"),
                                               routing_key=queue + ".dlq")
    finally:
        await connection.close()
    async with running_bus(bus_db, settings, [rec.consumer]) as bus:
        await asyncio.wait_for(bus.running.wait(), 30)
        arguments = queue_arguments(bus_vhost_url)
        assert arguments[queue + ".dlq"]["x-message-ttl"] == parked_ttl_ms(settings)
        assert arguments[queue + ".retry"]["x-message-ttl"] == parked_ttl_ms(settings)
        assert queue + ".dlq.upgrade" not in arguments and queue + ".retry.upgrade" not in arguments
        connection = await aio_pika.connect(bus_vhost_url)
        try:
            channel = await connection.channel()
            dlq = await channel.declare_queue(queue + ".dlq", passive=True)
            message = await dlq.get(fail=False, no_ack=False)
            assert message is not None and message.message_id == "old-dead-letter" and message.body == b"parked"
            await message.ack()
        finally:
            await connection.close()
