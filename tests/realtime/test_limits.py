"""Real-time limits (API.md v1.1): sockets per user across instances, handlers in flight
per socket, slow consumers' outbound budgets, and whom presence:query answers for."""
from __future__ import annotations

import asyncio

import pytest
import socketio

from loadtest.stalled_socket import StalledSocket
from server import appkeys
from tests.helpers.realtime import SocketClient, follow
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def try_connect(url: str, token: str) -> SocketClient:
    client = SocketClient()
    try:
        await client.connect(url, token)
    except socketio.exceptions.ConnectionError:
        pass
    return client


async def test_sockets_per_user_hold_across_instances_under_concurrent_connects(api, start_instance):
    user, other = await api.register("lmcap"), await api.register("lmcap")
    async with start_instance(sockets_per_user=3) as one, start_instance(sockets_per_user=3) as two:
        attempts = await asyncio.gather(*(try_connect((one, two)[i % 2].url, user.token) for i in range(10)))
        try:
            accepted = [c for c in attempts if c.sio.connected]
            refused = [c for c in attempts if not c.sio.connected]
            assert len(accepted) == 3
            assert all(c.connect_errors == [{"message": "too_many_sockets"}] for c in refused)
            # Another user is not affected.
            bystander = await try_connect(one.url, other.token)
            assert bystander.sio.connected
            await bystander.close()
            # A closed socket frees its slot (on whichever instance it was).
            await accepted[0].sio.disconnect()

            async def slot_free() -> bool:
                client = await try_connect(two.url, user.token)
                attempts.append(client)
                return client.sio.connected

            await eventually(slot_free, timeout=10, interval=0.1)
            assert (await try_connect(one.url, user.token)).connect_errors == [{"message": "too_many_sockets"}]
        finally:
            for client in attempts:
                await client.close()


async def test_socket_slots_of_a_vanished_instance_expire(api, start_instance):
    """An instance that dies without cleanup stops counting once its slots' times pass."""
    user = await api.register("lmexp")
    async with start_instance(sockets_per_user=1, presence_ttl_seconds=2) as inst:
        cap = inst.realtime.cap
        # A slot claimed by an instance that is gone (nothing refreshes it).
        assert await cap.store.claim(user.id, "gone-instance:sid", 1)
        assert (await try_connect(inst.url, user.token)).connect_errors == [{"message": "too_many_sockets"}]

        async def expired() -> bool:
            client = await try_connect(inst.url, user.token)
            ok = client.sio.connected
            await client.close()
            return ok

        await eventually(expired, timeout=15, interval=0.1)


async def test_events_beyond_the_in_flight_and_queued_bounds_are_refused_with_a_busy_ack(api, start_instance, clients):
    asker, friend = await api.register("lmfl"), await api.register("lmfl")
    await follow(api, asker, friend)
    async with start_instance(socket_max_inflight_events=2, socket_max_queued_events=1, pg_pool_min=1,
                              pg_pool_max=1, pg_acquire_timeout_seconds=60, rate_limits=False) as inst:
        await clients(inst.url, friend.token)
        ask = await clients(inst.url, asker.token)
        query = {"user_ids": [friend.id]}
        db = inst.app[appkeys.DB]
        # The instance's only PostgreSQL connection is held: a presence query for a
        # followed user waits for it, so the first two stay in flight and the third waits.
        async with db.connection():
            calls = [asyncio.create_task(ask.call("presence:query", query, timeout=60)) for _ in range(5)]

            async def two_answered() -> bool:
                return sum(c.done() for c in calls) == 2

            await eventually(two_answered, timeout=10, interval=0.1)
            busy = [c.result() for c in calls if c.done()]
            assert all(a["ok"] is False and a["error"]["status"] == 429 for a in busy), busy
            assert not any(c.done() for c in calls[:3])
        # Once the connection is free, the two in flight and the queued one are answered.
        assert [await c for c in calls[:3]] == [{"ok": True, "online": [friend.id]}] * 3
        assert await ask.call("presence:query", query) == {"ok": True, "online": [friend.id]}


async def test_presence_answers_only_for_followed_users_and_conversation_members(api, instance_a, instance_b, clients):
    asker, followed, member, stranger, follower = [await api.register("lmpr") for _ in range(5)]
    await follow(api, asker, followed)
    await follow(api, follower, asker)  # being followed by someone is not enough
    status, _, _ = await api.request("POST", "/conversations", token=member.token, json={"member_ids": [asker.id]})
    assert status == 201
    for account in (followed, member, stranger, follower):
        await clients(instance_b.url, account.token)
    ask = await clients(instance_a.url, asker.token)
    ids = [stranger.id, member.id, follower.id, followed.id, asker.id]
    assert await ask.call("presence:query", {"user_ids": ids}) == {"ok": True,
                                                                    "online": [member.id, followed.id, asker.id]}
    # The stranger, asking back, sees no one.
    peek = await clients(instance_a.url, stranger.token)
    assert await peek.call("presence:query", {"user_ids": ids[1:]}) == {"ok": True, "online": []}


# --- slow consumers ---------------------------------------------------------------------

@pytest.mark.parametrize("budgets", [
    {"socket_max_buffered_bytes": 256 * 1024},  # the socket's own budget
    {"socket_max_buffered_bytes": 64 * 1024 * 1024, "instance_max_buffered_bytes": 256 * 1024},  # the instance's
], ids=["per-socket", "per-instance"])
async def test_a_stalled_socket_is_dropped_over_budget_and_others_get_every_message(
        api, start_instance, clients, budgets):
    stalled_user, reader = await api.register("lmsl"), await api.register("lmsl")
    async with start_instance(**budgets) as inst:
        stalled = await StalledSocket().connect(inst.url, stalled_user.token)
        try:
            members = await clients(inst.url, reader.token)
            realtime = inst.realtime
            assert len(realtime.sockets_by_user[stalled_user.id]) == 1
            dropped = realtime.sio.eio.outbound.dropped
            before = await realtime.offset_log.last_offset(stalled_user.id)
            body = "x" * 32 * 1024
            count = 300  # ~10 MB each: well past the kernel's socket buffers and the budget
            for i in range(count):
                await inst.pusher.push([stalled_user.id, reader.id], "message:new",
                                       {"message": {"id": str(i), "body": body}})
            got = [await members.next_event("message:new") for _ in range(count)]
            assert [g["message"]["id"] for g in got] == [str(i) for i in range(count)]

            async def dropped_it() -> bool:
                return realtime.sockets_by_user.get(stalled_user.id) is None

            await eventually(dropped_it, timeout=10, interval=0.1)
            assert realtime.sio.eio.outbound.dropped == dropped + 1
            assert members.sio.connected and members.disconnects == 0
        finally:
            stalled.close()
        # Reconnecting with the offset it had, the stalled client replays everything.
        resumed = await clients(inst.url, stalled_user.token, offset=before)
        replayed = [await resumed.next_event("message:new") for _ in range(count)]
        assert [r["message"]["id"] for r in replayed] == [str(i) for i in range(count)]
