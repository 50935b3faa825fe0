"""Resume with ``auth.offset``: missed events in order before new ones; ``resync`` when
the log cannot serve the offset."""
from __future__ import annotations

import asyncio

import pytest

from storage.redis.client import Keys
from storage.redis.offset_log import OffsetLogStore
from realtime.fanout import RedisPusher

pytestmark = pytest.mark.asyncio(loop_scope="session")


def note(text: str) -> dict:
    return {"notification": {"type": "welcome", "message": text}}


def texts(events) -> list[str]:
    return [data["notification"]["message"] for _, data in events]


async def test_reconnecting_with_the_last_offset_replays_missed_events_in_order_before_new_ones(
        api, instance_a, instance_b, clients):
    user = await api.register("rtres")
    first = await clients(instance_b.url, user.token)
    await instance_a.pusher.push([user.id], "notification:new", note("seen"))
    _, seen = await first.next()
    await first.sio.disconnect()
    for i in range(5):
        await instance_a.pusher.push([user.id], "notification:new", note(f"missed{i}"))
    await instance_a.pusher.push([user.id], "typing", {"conversation_id": "c", "user_id": "x", "typing": True},
                                 replay=False)  # ephemeral: not replayed
    again = await clients(instance_a.url, user.token, offset=seen["offset"])
    # New events pushed right away, while the replay may still be running, come after it.
    live = asyncio.gather(*(instance_a.pusher.push([user.id], "notification:new", note(f"new{i}")) for i in range(3)))
    await live
    got = [await again.next() for _ in range(8)]
    assert {e for e, _ in got} == {"notification:new"}
    assert texts(got)[:5] == [f"missed{i}" for i in range(5)]
    assert sorted(texts(got)[5:]) == [f"new{i}" for i in range(3)]
    offsets = [d["offset"] for _, d in got]
    assert offsets == sorted(offsets, key=lambda o: tuple(map(int, o.split("-"))))
    # Nothing twice: the next event is a fresh marker.
    await instance_a.pusher.push([user.id], "notification:new", note("marker"))
    assert texts([await again.next()]) == ["marker"]


async def test_offset_of_the_newest_event_replays_nothing(api, instance_a, clients):
    user = await api.register("rtnew")
    socket = await clients(instance_a.url, user.token)
    await instance_a.pusher.push([user.id], "notification:new", note("only"))
    _, data = await socket.next()
    await socket.sio.disconnect()
    again = await clients(instance_a.url, user.token, offset=data["offset"])
    await instance_a.pusher.push([user.id], "notification:new", note("next"))
    assert texts([await again.next()]) == ["next"]


@pytest.mark.parametrize("offset", ["garbage", "", "12", "1-2-3", "-1-0", "99999999999999999999999-0", 17, ["1-0"]])
async def test_malformed_offset_gets_resync_and_then_live_events(api, instance_a, clients, offset):
    user = await api.register("rtbad")
    socket = await clients(instance_a.url, user.token, raw_auth={"token": user.token, "offset": offset})
    assert await socket.next() == ("resync", {"reason": "invalid_offset"})
    await instance_a.pusher.push([user.id], "notification:new", note("live"))
    assert texts([await socket.next()]) == ["live"]


async def test_offset_never_issued_gets_resync(api, instance_a, clients):
    user = await api.register("rtunk")
    await instance_a.pusher.push([user.id], "notification:new", note("one"))
    socket = await clients(instance_a.url, user.token, offset="1-0")
    assert await socket.next() == ("resync", {"reason": "offset_too_old"})
    other = await clients(instance_a.url, user.token, offset="99999999999999-0")  # in the future
    assert await other.next() == ("resync", {"reason": "offset_too_old"})


async def test_offset_trimmed_out_of_the_log_gets_resync(api, settings, instance_a, clients):
    """A log capped at 10 events: after 300 more, the old offset cannot be served."""
    import redis.asyncio as aioredis

    user = await api.register("rttrim")
    socket = await clients(instance_a.url, user.token)
    redis = aioredis.from_url(settings.redis_url)
    try:
        small = RedisPusher(OffsetLogStore(redis, Keys(settings.namespace), max_events=10, max_age_seconds=3600))
        await small.push([user.id], "notification:new", note("old"))
        _, old = await socket.next()
        await socket.sio.disconnect()
        for i in range(300):
            await small.push([user.id], "notification:new", note(f"n{i}"))
        assert await redis.xlen(Keys(settings.namespace).offset_log(user.id)) < 301
    finally:
        await redis.aclose()
    again = await clients(instance_a.url, user.token, offset=old["offset"])
    assert await again.next() == ("resync", {"reason": "offset_too_old"})
    # The resynced client is live again.
    await instance_a.pusher.push([user.id], "notification:new", note("after resync"))
    assert texts([await again.next()]) == ["after resync"]


async def test_expired_log_gets_resync(api, settings, instance_a, clients):
    """The log expired (no events for its max age) and was recreated: the old offset
    cannot vouch for what happened in between."""
    import redis.asyncio as aioredis

    user = await api.register("rtexp")
    socket = await clients(instance_a.url, user.token)
    await instance_a.pusher.push([user.id], "notification:new", note("before"))
    _, before = await socket.next()
    await socket.sio.disconnect()
    redis = aioredis.from_url(settings.redis_url)
    try:
        await redis.delete(Keys(settings.namespace).offset_log(user.id))  # what expiry does
    finally:
        await redis.aclose()
    again = await clients(instance_a.url, user.token, offset=before["offset"])
    assert await again.next() == ("resync", {"reason": "offset_too_old"})
    await instance_a.pusher.push([user.id], "notification:new", note("recreated"))
    assert texts([await again.next()]) == ["recreated"]
    await again.sio.disconnect()
    later = await clients(instance_a.url, user.token, offset=before["offset"])
    assert await later.next() == ("resync", {"reason": "offset_too_old"})


async def test_log_is_capped_and_expires(api, settings, instance_a):
    import redis.asyncio as aioredis

    user = await api.register("rtttl")
    await instance_a.pusher.push([user.id], "notification:new", note("x"))
    redis = aioredis.from_url(settings.redis_url)
    try:
        ttl = await redis.ttl(Keys(settings.namespace).offset_log(user.id))
    finally:
        await redis.aclose()
    assert 0 < ttl <= settings.offset_log_max_age_seconds


async def test_offsets_around_entries_redacted_by_an_erasure_still_replay(api, settings, instance_a, clients):
    """An erasure redacts the entries about the erased user in others' logs: a client
    resuming from before them, or from a redacted entry itself (the last it saw), gets
    the rest in order, never ``resync``; the redacted ones are not replayed."""
    import redis.asyncio as aioredis

    user, gone = await api.register("rtred"), await api.register("rtgone")
    socket = await clients(instance_a.url, user.token)

    def about(text: str, actor: str) -> dict:
        return {"notification": {"type": "like", "message": text, "metadata": {"actor_id": actor}}}

    await instance_a.pusher.push([user.id], "notification:new", note("first"))
    _, first = await socket.next()
    # Two in a row about the erased user, one between the others, one last.
    for text, actor in (("g1", gone.id), ("g2", gone.id), ("keep1", user.id), ("g3", gone.id),
                        (f"{gone.username} in a text only", user.id), ("g4", gone.id)):
        await instance_a.pusher.push([user.id], "notification:new", about(text, actor))
    seen = {data["notification"]["message"]: data["offset"] for _, data in [await socket.next() for _ in range(6)]}
    await socket.sio.disconnect()
    redis = aioredis.from_url(settings.redis_url)
    try:
        log = OffsetLogStore(redis, Keys(settings.namespace), settings.offset_log_max_events,
                             settings.offset_log_max_age_seconds)
        assert await log.redact_about(gone.id, [user.id]) == 4
        # Idempotent: a rerun of the step finds nothing more.
        assert await log.redact_about(gone.id, [user.id]) == 0
    finally:
        await redis.aclose()
    kept = ["keep1", f"{gone.username} in a text only"]
    for offset, expected in ((first["offset"], kept), (seen["g1"], kept), (seen["g2"], kept),
                             (seen["keep1"], kept[1:]), (seen["g3"], kept[1:])):
        again = await clients(instance_a.url, user.token, offset=offset)
        got = [await again.next() for _ in expected]  # a resync would come first
        assert texts(got) == expected
        assert [d["offset"] for _, d in got] == [seen[t] for t in expected]  # the offsets they had
        await again.sio.disconnect()
    # From the last (redacted) entry: nothing to replay, and live events follow.
    again = await clients(instance_a.url, user.token, offset=seen["g4"])
    await instance_a.pusher.push([user.id], "notification:new", note("live"))
    assert texts([await again.next()]) == ["live"]
