"""RabbitMQ down for this app (its own vhost made unusable: permissions cleared and its
connections closed; the shared broker is never restarted): writes keep succeeding, their
events wait in the outbox, nothing is lost, and the consumers catch up once it is back."""
from __future__ import annotations

import uuid
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from loadtest.namespaces import rabbitmqctl
from tests.helpers.app import own_namespaces
from tests.helpers.faults import within_deadline
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def fetchval(dsn: str, query: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def test_writes_survive_a_broker_outage_and_consumers_catch_up(make_pg_database, make_amqp_vhost, start_app):
    # A database of its own: another app's relay must not publish this app's outbox.
    dsn = make_pg_database(f"_amqpdown_{uuid.uuid4().hex[:6]}")
    own = own_namespaces(make_amqp_vhost, "amqpdown")
    vhost = unquote(urlsplit(own["amqp_url"]).path.lstrip("/"))
    async with start_app(**own, postgres_dsn=dsn, amqp_reconnect_seconds=0.5, outbox_poll_seconds=0.2) as api:
        async def ready() -> bool:
            return (await api.request("GET", "/readyz"))[0] == 200

        await eventually(ready)
        alice = await api.register("aqa")
        bob = await api.register("aqb")
        status, first, _ = await api.request("POST", "/posts", token=alice.token, json={"body": "before the outage"})
        assert status == 201
        status, _, _ = await api.request("PUT", f"/posts/{first['id']}/like", token=bob.token)
        assert status == 200
        pending = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        handled = "SELECT count(*) FROM processed_events WHERE consumer = 'posts.popular' AND event_id = $1"
        await eventually(lambda: _zero(dsn, pending))  # relayed while the broker is up

        rabbitmqctl("clear_permissions", "-p", vhost, "guest")
        rabbitmqctl("close_all_connections", "--vhost", vhost, "test: broker outage")
        try:
            async def not_ready() -> bool:
                status, body, _ = await api.request("GET", "/readyz")
                return status == 503 and body["failing"] == ["rabbitmq"]

            await eventually(not_ready)
            # Writes go on: each commits its row and its event together.
            status, second, _ = await within_deadline(api.request(
                "POST", "/posts", token=alice.token, json={"body": "during the outage"}))
            assert status == 201
            status, liked, _ = await within_deadline(api.request("PUT", f"/posts/{second['id']}/like",
                                                                 token=bob.token))
            assert status == 200 and liked["liked"] is True
            carol = await within_deadline(api.register("aqc"))
            status, _, _ = await within_deadline(api.request("GET", "/users/me", token=carol.token))
            assert status == 200
            # The events wait in the outbox; the like has not reached its consumer.
            assert await fetchval(dsn, pending) >= 3
            liked_event = await fetchval(
                dsn, "SELECT id FROM outbox WHERE event_type = 'post.liked' AND payload->>'post_id' = $1",
                second["id"])
            assert liked_event is not None
            assert await fetchval(dsn, handled, liked_event) == 0
        finally:
            rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

        # Back: the relay drains the outbox and the consumer handles what it missed.
        await eventually(lambda: _zero(dsn, pending), timeout=60)
        await eventually(lambda: _nonzero(dsn, handled, liked_event), timeout=60)

        async def in_popular() -> bool:
            status, page, _ = await api.request("GET", "/posts/popular", token=carol.token)
            return status == 200 and second["id"] in [p["id"] for p in page["items"]]

        await eventually(in_popular)
        await eventually(ready)


async def _zero(dsn: str, query: str, *args) -> bool:
    return await fetchval(dsn, query, *args) == 0


async def _nonzero(dsn: str, query: str, *args) -> bool:
    return await fetchval(dsn, query, *args) > 0
