"""Revocation reaches live sockets (API.md v1.1): logout, logout-all, session expiry and
erasure disconnect every affected socket on every instance, also when the fan-out
message is lost (the listener down at that moment): each instance re-checks its
sockets' sessions every ``socket_session_check_seconds``."""
from __future__ import annotations

import aiohttp
import pytest
import socketio

from tests.helpers.api import Api
from tests.helpers.realtime import SocketClient
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def login(api: Api, account) -> str:
    status, body, _ = await api.request("POST", "/auth/login", json={"login": account.username,
                                                                   "password": account.password})
    assert status == 200, body
    return body["token"]


async def refused(url: str, token: str) -> list:
    again = SocketClient()
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await again.connect(url, token)
        return again.connect_errors
    finally:
        await again.close()


async def test_logout_on_one_instance_disconnects_that_sessions_sockets_on_both(api, instance_a, instance_b, clients):
    user = await api.register("rvlo")
    other_token = await login(api, user)
    here = await clients(instance_a.url, user.token)
    there = await clients(instance_b.url, user.token)
    other_device = await clients(instance_b.url, other_token)

    status, _, _ = await api.request("POST", "/auth/logout", token=user.token)
    assert status == 204

    async def both_closed() -> bool:
        return here.disconnects == 1 and there.disconnects == 1

    await eventually(both_closed, timeout=10, interval=0.1)
    # Only that session's sockets: the user's other session keeps its socket.
    assert other_device.sio.connected and other_device.disconnects == 0
    assert await refused(instance_b.url, user.token) == [{"message": "unauthorized"}]


async def test_logout_all_revokes_every_session_and_disconnects_all_sockets(api, instance_a, instance_b, clients):
    user, bystander = await api.register("rvla"), await api.register("rvlb")
    second = await login(api, user)
    sockets = [await clients(instance_a.url, user.token), await clients(instance_b.url, user.token),
               await clients(instance_a.url, second), await clients(instance_b.url, second)]
    watcher = await clients(instance_b.url, bystander.token)

    status, body, _ = await api.request("POST", "/auth/logout-all", token=second)
    assert status == 204, body

    async def all_closed() -> bool:
        return all(s.disconnects == 1 for s in sockets)

    await eventually(all_closed, timeout=10, interval=0.1)
    assert watcher.sio.connected
    for token in (user.token, second):
        status, _, _ = await api.request("GET", "/users/me", token=token)
        assert status == 401
    status, _, _ = await api.request("POST", "/auth/logout-all", token=user.token)
    assert status == 401
    assert await refused(instance_a.url, second) == [{"message": "unauthorized"}]


async def test_expired_sessions_sockets_are_disconnected_on_every_instance(start_instance, clients):
    async with start_instance(session_ttl_seconds=3, socket_session_check_seconds=0.5) as one, \
            start_instance(session_ttl_seconds=3, socket_session_check_seconds=0.5) as two, \
            aiohttp.ClientSession() as http:
        api = Api(http, one.url)
        user = await api.register("rvex")
        here, there = await clients(one.url, user.token), await clients(two.url, user.token)
        assert here.sio.connected and there.sio.connected

        async def both_closed() -> bool:
            return here.disconnects == 1 and there.disconnects == 1

        await eventually(both_closed, timeout=20, interval=0.1)
        status, _, _ = await api.request("GET", "/users/me", token=user.token)
        assert status == 401


async def test_erasure_disconnects_sockets_even_when_the_fan_out_message_is_lost(
        api, instance_a, start_instance, clients):
    leaving, staying = await api.register("rver"), await api.register("rvst")
    async with start_instance() as holder:
        here = await clients(instance_a.url, leaving.token)
        there = await clients(holder.url, leaving.token)
        bystander = await clients(holder.url, staying.token)
        # The holder's fan-out listener is down at the moment of the erasure: the
        # disconnect published then never reaches it.
        await holder.realtime.listener.stop()
        subscriptions = holder.realtime.listener.subscriptions

        status, _, _ = await api.request("DELETE", "/users/me", token=leaving.token,
                                         json={"password": leaving.password})
        assert status == 202

        async def both_closed() -> bool:
            return here.disconnects == 1 and there.disconnects == 1

        await eventually(both_closed, timeout=10, interval=0.1)
        assert not holder.realtime.listener.subscribed.is_set()  # closed by the session re-check
        assert holder.realtime.sockets_by_user.get(leaving.id) is None
        # The listener resubscribes; the bystander is still connected and gets events.
        holder.realtime.listener.start()

        async def resubscribed() -> bool:
            return holder.realtime.listener.subscriptions > subscriptions

        await eventually(resubscribed, timeout=10, interval=0.1)
        await holder.pusher.push([staying.id], "notification:new", {"notification": {"message": "still here"}})
        assert (await bystander.next_event("notification:new"))["notification"]["message"] == "still here"
        assert bystander.disconnects == 0
        await bystander.close()  # while its server is still up
    assert await refused(instance_a.url, leaving.token) == [{"message": "unauthorized"}]


async def test_logout_closes_sockets_whose_fan_out_message_was_lost_on_every_instance(
        api, start_instance, clients):
    user = await api.register("rvll")
    async with start_instance() as one, start_instance() as two:
        here, there = await clients(one.url, user.token), await clients(two.url, user.token)
        for inst in (one, two):
            await inst.realtime.listener.stop()
        status, _, _ = await api.request("POST", "/auth/logout", token=user.token)
        assert status == 204

        async def both_closed() -> bool:
            return here.disconnects == 1 and there.disconnects == 1

        await eventually(both_closed, timeout=10, interval=0.1)
        for inst in (one, two):
            inst.realtime.listener.start()


async def test_send_and_typing_recheck_the_session(api, start_instance, clients):
    """Without the fast path and with the periodic re-check far away, a revoked socket
    still cannot send: the event re-checks the session, is refused and the socket closed."""
    user, friend = await api.register("rvrc"), await api.register("rvrc")
    status, conv, _ = await api.request("POST", "/conversations", token=user.token, json={"member_ids": [friend.id]})
    assert status == 201
    async with start_instance(socket_session_check_seconds=3600) as inst:
        for event, data in (("message:send", {"conversation_id": conv["id"], "body": "after logout",
                                              "client_id": "rc1"}),
                            ("typing", {"conversation_id": conv["id"], "typing": True})):
            token = await login(api, user)
            socket = await clients(inst.url, token)
            await inst.realtime.listener.stop()
            status, _, _ = await api.request("POST", "/auth/logout", token=token)
            assert status == 204
            assert socket.sio.connected
            ack = await socket.call(event, data)
            assert ack["ok"] is False and ack["error"]["status"] == 401, ack

            async def closed() -> bool:
                return socket.disconnects == 1

            await eventually(closed, timeout=10, interval=0.1)
            inst.realtime.listener.start()
            assert await inst.realtime.listener.wait_subscribed(10)
    _, history, _ = await api.request("GET", f"/conversations/{conv['id']}/messages", token=friend.token)
    assert history["items"] == []
