"""OffsetLogStore.append_and_publish_many against a real Redis: one pipeline, each log and
the channel in the given order, a once key honoured, and a Redis that lost its scripts."""
from __future__ import annotations

import uuid

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from storage.redis.client import Keys
from storage.redis.offset_log import START_OF_LOG, OffsetLogStore
from tests.helpers.stores import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def log(redis_url):
    redis = aioredis.from_url(redis_url)
    yield OffsetLogStore(redis, Keys(f"logtest-{uuid.uuid4().hex[:8]}"), max_events=100, max_age_seconds=60)
    await redis.aclose()


def event(n: int) -> bytes:
    return orjson.dumps({"n": n})


async def logged(log: OffsetLogStore, user_id: str) -> list[int]:
    return [orjson.loads(e.data_json)["n"] for e in await log.read_after(user_id, START_OF_LOG)]


async def test_many_events_land_in_each_log_and_on_the_channel_in_order(log, redis_url):
    listener = aioredis.from_url(redis_url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(log.keys.fanout_channel())
    try:
        await pubsub.get_message(timeout=1)  # the subscription's confirmation
        await log.append_and_publish_many([(["a", "b"], "e", event(1), None), (["b"], "e", event(2), "once:2"),
                                           (["a", "b"], "e", event(3), None), (["a"], "e", event(2), "once:2")])
        assert await logged(log, "a") == [1, 3] and await logged(log, "b") == [1, 2, 3]
        published = []
        while len(published) < 3:
            message = await pubsub.get_message(timeout=2)
            assert message is not None, published
            if message["type"] == "message":
                published.append(orjson.loads(message["data"].partition(b"\n")[2])["n"])
        assert published == [1, 2, 3]  # the second once:2 appended and published nothing
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def test_a_redis_that_lost_its_scripts_gets_them_again_and_nothing_is_lost(tmp_path):
    server = RedisServer(tmp_path).start()  # our own: scripts are global to a server
    redis = aioredis.from_url(server.url)
    try:
        log = OffsetLogStore(redis, Keys("scripts"), max_events=100, max_age_seconds=60)
        await log.append_and_publish_many([(["c"], "e", event(0), None)])
        await redis.script_flush()  # as after a restart
        await log.append_and_publish_many([(["c"], "e", event(n), None) for n in range(1, 5)])
        assert await logged(log, "c") == [0, 1, 2, 3, 4]
    finally:
        await redis.aclose()
        server.stop()
