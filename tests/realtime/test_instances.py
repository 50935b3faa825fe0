"""Instances coming and going: graceful shutdown, an instance killed with SIGKILL,
and a Redis restart under two instances."""
from __future__ import annotations

import asyncio

import pytest

from tests.helpers.realtime import follow
from tests.helpers.stores import RedisServer
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


def note(text: str) -> dict:
    return {"notification": {"type": "welcome", "message": text}}


async def test_killed_instance_stops_counting_users_online_within_seconds(api, instance_a, serve_process, clients):
    doomed = serve_process(presence_ttl_seconds=2)
    asker, user = await api.register("rtkill"), await api.register("rtkill")
    await follow(api, asker, user)
    ask = await clients(instance_a.url, asker.token)
    await clients(doomed.url, user.token)
    assert (await ask.call("presence:query", {"user_ids": [user.id]}))["online"] == [user.id]
    doomed.kill()  # SIGKILL: no cleanup runs

    async def offline():
        return (await ask.call("presence:query", {"user_ids": [user.id]}))["online"] == []

    await eventually(offline, timeout=15, interval=0.1)


async def test_graceful_shutdown_disconnects_sockets_and_clears_presence(api, instance_a, start_instance, clients):
    from storage.embedded.processes import free_port

    asker, user = await api.register("rtdown"), await api.register("rtdown")
    await follow(api, asker, user)
    ask = await clients(instance_a.url, asker.token)
    port = free_port()
    async with start_instance(port=port) as inst:
        socket = await clients(inst.url, user.token, reconnection=True)
        await inst.pusher.push([user.id], "notification:new", note("before"))
        _, before = await socket.next()
        assert (await ask.call("presence:query", {"user_ids": [user.id]}))["online"] == [user.id]
    # Shut down: the socket was dropped (not told to stay away) and the user is offline.
    assert socket.disconnects == 1
    assert (await ask.call("presence:query", {"user_ids": [user.id]}))["online"] == []
    await instance_a.pusher.push([user.id], "notification:new", note("while away"))
    # The client reconnects by itself to the instance that takes over the address.
    async with start_instance(port=port) as successor:
        async def reconnected():
            return socket.connects == 2 and socket.sio.connected

        await eventually(reconnected, timeout=20, interval=0.1)
        await successor.pusher.push([user.id], "notification:new", note("after"))
        assert (await socket.next_event("notification:new"))["notification"]["message"] == "after"
        assert (await ask.call("presence:query", {"user_ids": [user.id]}))["online"] == [user.id]


async def test_fan_out_survives_a_redis_restart(api, start_instance, clients, tmp_path):
    redis_server = RedisServer(tmp_path).start()
    try:
        user = await api.register("rtredis")
        async with start_instance(redis_url=redis_server.url) as sender, \
                start_instance(redis_url=redis_server.url) as holder:
            socket = await clients(holder.url, user.token)
            await sender.pusher.push([user.id], "notification:new", note("before restart"))
            assert (await socket.next())[1]["notification"]["message"] == "before restart"
            subscriptions = holder.realtime.listener.subscriptions

            redis_server.stop()
            redis_server.start()

            # Without restarting either app, cross-instance delivery comes back within seconds.
            async def resubscribed():
                return holder.realtime.listener.subscriptions > subscriptions and \
                    holder.realtime.listener.subscribed.is_set()

            await eventually(resubscribed, timeout=15, interval=0.1)
            received = []

            async def delivered():
                try:
                    await sender.pusher.push([user.id], "notification:new", note("after restart"))
                except Exception:  # noqa: BLE001 - the sender's pool may need a moment too
                    return False
                try:
                    received.append(await socket.next(timeout=1))
                except asyncio.TimeoutError:
                    return False
                return received[-1][0] == "notification:new"

            await eventually(delivered, timeout=20, interval=0.1)
            assert socket.sio.connected
            assert received[-1][1]["notification"]["message"] == "after restart"
            # The log survived (AOF), so catching up after the gap needed no resync.
            assert [e for e, _ in received] == ["notification:new"] * len(received)
    finally:
        redis_server.stop()


async def test_events_published_while_the_subscription_was_down_are_caught_up_in_order(
        api, start_instance, clients, tmp_path):
    """The listener's connection is cut (Redis stays up): what was published meanwhile
    reaches the socket from the offset log after the resubscription, before newer events."""
    import redis.asyncio as aioredis

    redis_server = RedisServer(tmp_path).start()
    admin = aioredis.from_url(redis_server.url)
    try:
        user = await api.register("rtgap")
        async with start_instance(redis_url=redis_server.url) as sender, \
                start_instance(redis_url=redis_server.url) as holder:
            socket = await clients(holder.url, user.token)
            await sender.pusher.push([user.id], "notification:new", note("before"))
            assert (await socket.next())[1]["notification"]["message"] == "before"
            subscriptions = holder.realtime.listener.subscriptions
            await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            for i in range(3):
                await sender.pusher.push([user.id], "notification:new", note(f"gap{i}"))

            async def resubscribed():
                return holder.realtime.listener.subscriptions > subscriptions

            await eventually(resubscribed, timeout=15, interval=0.1)
            await sender.pusher.push([user.id], "notification:new", note("after"))
            got = [(await socket.next())[1]["notification"]["message"] for _ in range(4)]
            assert got == ["gap0", "gap1", "gap2", "after"]
    finally:
        await admin.aclose()
        redis_server.stop()
