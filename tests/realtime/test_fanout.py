"""The fan-out listener with near-caches: it confirms the channel on a timetable whatever
the traffic, and it stops whenever it is cancelled (its reads time out every few
milliseconds then, and a read timing out as the cancellation arrived once swallowed it:
the app's shutdown waited for ever)."""
from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest

from realtime.fanout import FanoutListener
from storage.near_cache import NearCaches
from storage.redis.client import Keys

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def nothing(*_args) -> None:
    return None


def listener(settings, near: NearCaches) -> FanoutListener:
    return FanoutListener(settings, Keys(f"fanout-test-{uuid.uuid4().hex[:8]}"), nothing, nothing,
                          near_caches=near)


async def test_the_channel_is_confirmed_within_the_lease_while_subscribed(settings):
    near = NearCaches(max_entries=10, ttl_seconds=60, lease_seconds=0.3)
    fanout = listener(settings, near)
    fanout.start()
    try:
        assert await fanout.wait_subscribed(timeout=10)
        for _ in range(10):  # keeps being confirmed, not only at the subscription
            await asyncio.sleep(0.1)
            assert near.current(time.monotonic())
    finally:
        await fanout.stop()
    assert not near.current(time.monotonic())  # gone with the subscription


async def test_the_listener_stops_whenever_it_is_cancelled(settings):
    for _ in range(60):
        # A lease of 30 ms: pings (and read timeouts) every 10 ms.
        fanout = listener(settings, NearCaches(max_entries=10, ttl_seconds=1, lease_seconds=0.03))
        fanout.start()
        await asyncio.sleep(random.uniform(0.02, 0.15))
        # Bounded, so that a listener that does not stop fails the test instead of hanging it.
        await asyncio.wait_for(fanout.stop(), 10)
