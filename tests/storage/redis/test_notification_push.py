"""Push windows of grouped notifications: one push per window whoever asks, and a push
owed by a change inside the window is reported until someone takes the next window."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from storage.redis.client import Keys, create_redis
from storage.redis.notification_push import NOTHING_OWED, PUSH_NOW, PushWindowStore

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def windows(settings):
    redis = create_redis(settings)
    yield PushWindowStore(redis, Keys(f"{settings.namespace}:{uuid.uuid4().hex[:6]}"), window_ms=300)
    await redis.aclose()


async def test_one_of_many_concurrent_changes_pushes_and_the_rest_owe_one(windows):
    answers = await asyncio.gather(*(windows.request("u", "g") for _ in range(20)))
    assert answers.count(PUSH_NOW) == 1
    assert all(0 < a <= 300 for a in answers if a != PUSH_NOW)
    # Inside the window the owed push waits; at its end the first to ask takes it.
    assert await windows.request("u", "g", owed_only=True) > 0
    await asyncio.sleep(0.35)
    checks = await asyncio.gather(*(windows.request("u", "g", owed_only=True) for _ in range(5)))
    assert checks.count(PUSH_NOW) == 1 and checks.count(NOTHING_OWED) == 4
    # Nothing changed since: nothing owed, even once the window is over.
    await asyncio.sleep(0.35)
    assert await windows.request("u", "g", owed_only=True) == NOTHING_OWED
    # Other groups have windows of their own.
    assert await windows.request("u", "other") == PUSH_NOW


async def test_an_owed_push_can_be_taken_over_once(windows):
    assert await windows.request("u", "g") == PUSH_NOW
    assert not await windows.take_owed("u", "g")
    assert await windows.request("u", "g") > 0
    assert await windows.take_owed("u", "g")
    assert not await windows.take_owed("u", "g")
    await asyncio.sleep(0.35)
    assert await windows.request("u", "g", owed_only=True) == NOTHING_OWED


async def test_a_group_pushed_in_consecutive_windows_backs_off_up_to_the_largest(settings):
    redis = create_redis(settings)
    try:
        windows = PushWindowStore(redis, Keys(f"{settings.namespace}:{uuid.uuid4().hex[:6]}"), window_ms=100,
                              max_window_ms=400)
        held = []
        for _ in range(4):  # a push, then changes inside the window: how long is it held?
            assert await windows.request("u", "g") == PUSH_NOW
            held.append(await windows.request("u", "g"))
            await asyncio.sleep(held[-1] / 1000 + 0.02)
        assert held[0] <= 100 and 100 < held[1] <= 200 and 200 < held[2] <= 400 and 200 < held[3] <= 400
        # Quiet for twice its window: back to the base.
        await asyncio.sleep(0.85)
        assert await windows.request("u", "g") == PUSH_NOW
        assert await windows.request("u", "g") <= 100
    finally:
        await redis.aclose()
