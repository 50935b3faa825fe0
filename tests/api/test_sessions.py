"""Sessions live in PostgreSQL and are cached in Redis: a lost cache logs no one out."""
from __future__ import annotations

import redis.asyncio as aioredis
import pytest

from storage.embedded.processes import free_port
from tests.helpers.stores import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_flushed_cache_logs_no_one_out(api, settings):
    acct = await api.register("flush")
    r = aioredis.from_url(settings.redis_url)
    try:
        keys = [k async for k in r.scan_iter(match=f"{settings.namespace}:sess:*")]
        assert keys, "the session is cached in Redis"
        await r.delete(*keys)
    finally:
        await r.aclose()
    status, me, _ = await api.request("GET", "/users/me", token=acct.token)
    assert status == 200 and me["id"] == acct.id


async def test_authentication_works_while_redis_is_down_and_login_fails_closed(api, start_app):
    acct = await api.register("noredis")
    async with start_app(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_seconds=0.2) as down:
        status, me, _ = await down.request("GET", "/users/me", token=acct.token)
        assert status == 200 and me["id"] == acct.id
        status, body, resp = await down.request("POST", "/auth/login", json={"login": acct.username,
                                                                              "password": acct.password})
        assert status == 503 and body["store"] == "redis" and "Retry-After" in resp.headers



async def test_logout_while_redis_is_down_takes_effect_when_it_returns(start_app, tmp_path):
    redis_server = RedisServer(tmp_path).start()
    try:
        async with start_app(redis_url=redis_server.url, redis_timeout_seconds=0.3) as api:
            acct = await api.register("revoke")
            status, _, _ = await api.request("GET", "/users/me", token=acct.token)
            assert status == 200  # cached in Redis now
            redis_server.stop()
            status, _, _ = await api.request("POST", "/auth/logout", token=acct.token)
            assert status == 204
            status, _, _ = await api.request("GET", "/users/me", token=acct.token)
            assert status == 401  # Redis down: answered from PostgreSQL
            redis_server.start()  # comes back with its data, the stale entry included
            async with start_app(redis_url=redis_server.url) as other:
                status, _, _ = await api.request("GET", "/users/me", token=acct.token)
                assert status == 401
                status, _, _ = await other.request("GET", "/users/me", token=acct.token)
                assert status == 401
    finally:
        redis_server.stop()


async def test_expired_session_is_refused(start_app):
    async with start_app(session_ttl_seconds=0) as api:
        acct = await api.register("exp")
        status, _, _ = await api.request("GET", "/users/me", token=acct.token)
        assert status == 401
