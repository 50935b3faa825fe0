"""The Redis pool: a burst larger than the pool waits for a connection instead of failing."""
from __future__ import annotations

import asyncio

from storage.redis.client import create_redis


async def test_burst_beyond_pool_size_waits_for_connections(settings):
    redis = create_redis(settings.replace(redis_pool_max=2, redis_timeout_seconds=5))
    try:
        # Twenty concurrent commands that each hold a connection for a moment.
        empty_list = f"{settings.namespace}:test:nothing-here"
        results = await asyncio.gather(*(redis.blpop([empty_list], timeout=0.05) for _ in range(20)))
        assert results == [None] * 20
        pool = redis.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 2
    finally:
        await redis.aclose()
