"""The direct-write websocket transport (realtime/transport.py): fan-out written as
ready-made frames reaches every socket of every recipient, in order, exactly once;
long-polling clients and clients upgrading from polling keep working through
engineio's own path, events and acks alike."""
from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import aiohttp
import pytest

from realtime.transport import SPENT_QUEUE, Deadlines, DirectSocket, ws_frame
from storage.redis.offset_log import parse_offset
from tests.helpers.realtime import SocketClient
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


def note(text: str) -> dict:
    return {"notification": {"id": uuid.uuid4().hex, "type": "welcome", "message": text}}


async def pushed_notes(client, count: int) -> list[str]:
    """The texts of the next ``count`` notes pushed by the test, leaving out the real
    welcome the event bus sends a new account whenever it gets to it."""
    texts: list[str] = []
    while len(texts) < count:
        message = (await client.next_event("notification:new"))["notification"]["message"]
        if not message.startswith("Welcome to Pulse"):
            texts.append(message)
    return texts


async def connect(url: str, token: str, transports: list[str]) -> SocketClient:
    client = SocketClient()
    await client.sio.connect(url, auth={"token": token}, socketio_path="socket.io", transports=transports,
                             wait_timeout=10)
    return client


async def test_frame_lengths_follow_rfc6455():
    assert ws_frame("a" * 125)[:2] == bytes((0x81, 125))
    assert ws_frame("a" * 126)[:4] == bytes((0x81, 126, 0, 126))
    assert ws_frame("a" * 65536)[:10] == bytes((0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0))
    assert ws_frame(b"\x01\x02")[:2] == bytes((0x82, 2))


async def test_fanout_reaches_every_socket_of_every_recipient_in_order_exactly_once(api, instance_a, clients):
    alice, bob = await api.register("tdw"), await api.register("tdw")
    sockets = {
        alice.id: [await clients(instance_a.url, alice.token), await clients(instance_a.url, alice.token)],
        bob.id: [await clients(instance_a.url, bob.token)],
    }
    live = [s for s in instance_a.realtime.sockets.values() if s.user_id in sockets]
    assert len(live) == 3 and all(isinstance(s.eio_socket, DirectSocket) and s.eio_socket.direct for s in live)
    big = "x" * 70_000  # a frame with a 64-bit length
    for i in range(30):
        await instance_a.pusher.push([alice.id, bob.id], "notification:new", note(big if i == 7 else f"n{i}"))
    for user_id, user_sockets in sockets.items():
        offsets_seen = []
        for sock in user_sockets:
            got = [await sock.next_event("notification:new") for _ in range(30)]
            messages = [g["notification"]["message"] for g in got]
            assert messages == [big if i == 7 else f"n{i}" for i in range(30)]
            offsets = [parse_offset(g["offset"]) for g in got]
            assert offsets == sorted(set(offsets))  # strictly increasing: no repeat, no reorder
            offsets_seen.append(offsets)
            assert sock.received.empty()  # exactly once: nothing extra
        assert all(o == offsets_seen[0] for o in offsets_seen)  # the offsets are the user's


async def test_polling_client_gets_events_and_acks(api, instance_a):
    carol = await api.register("tpl")
    client = await connect(instance_a.url, carol.token, ["polling"])
    try:
        assert client.sio.transport() == "polling"
        state = next(s for s in instance_a.realtime.sockets.values() if s.user_id == carol.id)
        assert not state.eio_socket.direct  # engineio's queue path
        for i in range(5):
            await instance_a.pusher.push([carol.id], "notification:new", note(f"p{i}"))
        assert await pushed_notes(client, 5) == [f"p{i}" for i in range(5)]
        answer = await client.call("presence:query", {"user_ids": [carol.id]})
        assert answer == {"ok": True, "online": [carol.id]}
        bad = await client.call("presence:query", {"user_ids": "nope"})
        assert bad["ok"] is False and bad["error"]["status"] == 400
    finally:
        await client.close()


async def test_client_upgrading_from_polling_gets_events(api, instance_a):
    dave = await api.register("tup")
    client = await connect(instance_a.url, dave.token, ["polling", "websocket"])
    try:
        for i in range(5):
            await instance_a.pusher.push([dave.id], "notification:new", note(f"u{i}"))
        assert await pushed_notes(client, 5) == [f"u{i}" for i in range(5)]
        answer = await client.call("presence:query", {"user_ids": [dave.id]})
        assert answer["ok"] is True
    finally:
        await client.close()


async def raw_socket(session, url: str, token: str, **ws_options):
    """A bare Engine.IO/Socket.IO websocket (no client library answering pings for us)."""
    ws = await session.ws_connect(url + "/socket.io/?EIO=4&transport=websocket", **ws_options)
    opened = await ws.receive(timeout=10)
    assert opened.data.startswith("0")
    await ws.send_str("40" + json.dumps({"token": token}))
    connected = await ws.receive(timeout=10)
    assert connected.data.startswith("40")
    return ws


@contextlib.contextmanager
def fast_pings(eio, interval: float, timeout: float):
    """Short ping deadlines on a running server (each Deadlines has one fixed delay)."""
    saved = eio.ping_due, eio.pong_due
    eio.ping_due = Deadlines(interval, lambda sock, _: sock.ping_due())
    eio.pong_due = Deadlines(timeout, lambda sock, stamp: sock.pong_due(stamp))
    try:
        yield
    finally:
        eio.ping_due, eio.pong_due = saved


async def test_a_socket_that_does_not_answer_pings_is_dropped_and_one_that_does_stays(api, instance_a):
    mute, chatty = await api.register("tpg"), await api.register("tpg")
    realtime = instance_a.realtime
    with fast_pings(realtime.sio.eio, 0.3, 0.3):
        async with aiohttp.ClientSession() as session:
            mute_ws = await raw_socket(session, instance_a.url, mute.token)
            chatty_ws = await raw_socket(session, instance_a.url, chatty.token)

            async def answer_pings() -> None:
                async for msg in chatty_ws:
                    if msg.data == "2":
                        await chatty_ws.send_str("3")

            answering = asyncio.create_task(answer_pings())
            try:
                async def mute_gone() -> bool:
                    return mute.id not in realtime.sockets_by_user

                await eventually(mute_gone, timeout=10, interval=0.1)
                assert chatty.id in realtime.sockets_by_user  # answered several pings meanwhile
                closed = await mute_ws.receive(timeout=10)
                assert closed.data == "2"  # the unanswered ping, then the end
                closed = await mute_ws.receive(timeout=10)
                assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            finally:
                answering.cancel()
                await chatty_ws.close()
                await mute_ws.close()

        async def chatty_gone() -> bool:
            return chatty.id not in realtime.sockets_by_user

        await eventually(chatty_gone, timeout=10, interval=0.1)


async def test_live_websocket_keeps_no_queue_environ_or_deflate(api, instance_a, clients):
    erin = await api.register("tlw")
    async with aiohttp.ClientSession() as session:
        # A browser-like client offers permessage-deflate; the server declines it.
        ws = await raw_socket(session, instance_a.url, erin.token, compress=15)
        try:
            assert ws.compress == 0
            state = next(s for s in instance_a.realtime.sockets.values() if s.user_id == erin.id)
            sock = state.eio_socket
            assert sock.direct and sock.queue is SPENT_QUEUE
            assert instance_a.realtime.sio.environ[state.eio_sid] == {}
            await instance_a.pusher.push([erin.id], "notification:new", note("after"))
            msg = await ws.receive(timeout=10)
            assert msg.data.startswith('42["notification:new"') and '"after"' in msg.data
        finally:
            await ws.close()
