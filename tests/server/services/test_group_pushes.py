"""Coalesced pushes of a group across instances: at most one per window, each carrying the
group as it is when pushed, and the last change of a burst always pushed."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from server.services.group_pushes import GroupPushes
from storage.redis.client import Keys, create_redis
from storage.redis.notification_push import PushWindowStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

WINDOW_MS = 200


class Group:
    """A group's count in "MongoDB", and what its pushes carried."""

    def __init__(self) -> None:
        self.count = 0
        self.pushed: list[tuple[float, int]] = []

    async def push_latest(self, user_id: str, group_id: str) -> None:
        self.pushed.append((time.monotonic(), self.count))


@pytest.fixture
async def redis(settings):
    client = create_redis(settings)
    yield client
    await client.aclose()


async def test_a_burst_on_two_instances_is_pushed_once_per_window_ending_with_the_last_state(redis, settings):
    keys = Keys(f"{settings.namespace}:{uuid.uuid4().hex[:6]}")
    group = Group()
    instances = [GroupPushes(PushWindowStore(redis, keys, WINDOW_MS), group.push_latest) for _ in range(2)]
    started = time.monotonic()
    for i in range(60):  # 60 changes over about 1.2 s, alternately on each instance
        group.count += 1
        await instances[i % 2].changed("author", "g1")
        await asyncio.sleep(0.02)
    burst = time.monotonic() - started
    await asyncio.sleep(3 * WINDOW_MS / 1000)
    assert group.pushed[-1][1] == 60  # the last state went out
    assert len(group.pushed) <= burst * 1000 / WINDOW_MS + 2
    gaps = [b[0] - a[0] for a, b in zip(group.pushed, group.pushed[1:])]
    assert all(gap >= WINDOW_MS / 1000 * 0.9 for gap in gaps), gaps
    # Nothing more is owed: no timer is left behind.
    assert all(not p._owed for p in instances)


async def test_without_a_window_every_change_is_pushed(redis):
    group = Group()
    pushes = GroupPushes(None, group.push_latest)
    for _ in range(3):
        group.count += 1
        await pushes.changed("author", "g")
    assert [count for _, count in group.pushed] == [1, 2, 3]


async def test_stopping_pushes_what_is_owed_at_once(redis, settings):
    keys = Keys(f"{settings.namespace}:{uuid.uuid4().hex[:6]}")
    group = Group()
    pushes = GroupPushes(PushWindowStore(redis, keys, 10_000), group.push_latest)
    group.count = 1
    await pushes.changed("author", "g")
    group.count = 2
    await pushes.changed("author", "g")  # inside the (long) window: owed
    await pushes.stop()
    assert [count for _, count in group.pushed] == [1, 2]
    # Another group, pushed and unchanged since: nothing owed, nothing pushed at stop.
    await pushes.changed("author", "h")
    await pushes.stop()
    assert len(group.pushed) == 3


async def test_a_long_burst_backs_off_to_the_largest_window(redis, settings):
    keys = Keys(f"{settings.namespace}:{uuid.uuid4().hex[:6]}")
    group = Group()
    pushes = GroupPushes(PushWindowStore(redis, keys, 100, max_window_ms=400), group.push_latest)
    started = time.monotonic()
    for _ in range(80):  # about 1.6 s of changes
        group.count += 1
        await pushes.changed("author", "g")
        await asyncio.sleep(0.02)
    burst = time.monotonic() - started
    await asyncio.sleep(1.0)
    assert group.pushed[0][0] - started < 0.1  # the first change at once
    assert group.pushed[-1][1] == 80
    gaps = [b[0] - a[0] for a, b in zip(group.pushed, group.pushed[1:])]
    # 100, 200, then 400 ms apart (never closer than the window they had).
    assert all(gap >= 0.09 for gap in gaps[:1]) and all(gap >= 0.18 for gap in gaps[1:2])
    assert all(gap >= 0.36 for gap in gaps[2:]), gaps
    assert len(group.pushed) <= 3 + burst / 0.4 + 1
