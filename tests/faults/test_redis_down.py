"""Redis down (a Redis of the test's own, stopped): REST keeps working from PostgreSQL
(cache misses fall through), logins fail closed (503 naming "redis"), and everything works
again when Redis is back, without restarting the app. Socket reconnection and fan-out
resumption are covered by the real-time tests."""
from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from tests.helpers.app import own_namespaces
from tests.helpers.faults import assert_store_problem, within_deadline
from tests.helpers.stores import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_rest_survives_redis_down_logins_fail_closed_and_all_recovers(tmp_path, make_amqp_vhost, start_app):
    redis_server = RedisServer(tmp_path).start()
    overrides = own_namespaces(make_amqp_vhost, "redisdown")
    try:
        async with start_app(**overrides, redis_url=redis_server.url, redis_timeout_seconds=0.3) as api:
            alice = await api.register("rda")
            bob = await api.register("rdb")
            status, profile, _ = await api.request("GET", f"/users/{alice.id}", token=bob.token)
            assert status == 200  # now in the profile cache

            redis_server.stop()
            # Reads: cache misses fall through to PostgreSQL.
            status, me, _ = await within_deadline(api.request("GET", "/users/me", token=alice.token))
            assert status == 200 and me["id"] == alice.id
            status, seen, _ = await within_deadline(api.request("GET", f"/users/{alice.id}", token=bob.token))
            assert status == 200 and seen["username"] == alice.username
            status, seen, _ = await within_deadline(api.request("GET", f"/users/{alice.username}", token=bob.token))
            assert status == 200 and seen["id"] == alice.id
            # Writes that need no Redis.
            status, me, _ = await within_deadline(api.request("PATCH", "/users/me", token=alice.token,
                                                              json={"display_name": "Alice Offline"}))
            assert status == 200 and me["display_name"] == "Alice Offline"
            carol = await within_deadline(api.register("rdc"))
            status, _, _ = await within_deadline(api.request("GET", "/users/me", token=carol.token))
            assert status == 200
            # Logins fail closed: without the failure counters a brute force would get through.
            assert_store_problem(*await within_deadline(api.request(
                "POST", "/auth/login", json={"login": alice.username, "password": alice.password})), "redis")
            status, body, _ = await within_deadline(api.request("GET", "/readyz"))
            assert status == 503 and body["failing"] == ["redis"]

            redis_server.start()  # same port, same data (the pre-outage cache entries too)
            status, body, _ = await within_deadline(api.request("GET", "/readyz"))
            assert status == 200, body
            status, body, _ = await within_deadline(api.request(
                "POST", "/auth/login", json={"login": alice.username, "password": alice.password}))
            assert status == 200, body
            # The rename made during the outage is what others see: the invalidation that
            # could not reach Redis then is done before the old cache entry is trusted.
            status, seen, _ = await within_deadline(api.request("GET", f"/users/{alice.id}", token=bob.token))
            assert status == 200 and seen["display_name"] == "Alice Offline"
            # And the cache is in use again.
            r = aioredis.from_url(redis_server.url)
            try:
                assert await r.exists(f"{overrides['namespace']}:profile:{alice.id}") == 1
            finally:
                await r.aclose()
    finally:
        redis_server.stop()
