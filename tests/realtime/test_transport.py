"""The direct-write websocket transport (realtime/transport.py): fan-out written as
ready-made frames reaches every socket of every recipient, in order, exactly once;
long-polling clients and clients upgrading from polling keep working through
engineio's own path, events and acks alike."""
from __future__ import annotations

import uuid

import pytest

from realtime.transport import DirectSocket, ws_frame
from storage.redis.offset_log import parse_offset
from tests.realtime.conftest import SocketClient

pytestmark = pytest.mark.asyncio(loop_scope="session")


def note(text: str) -> dict:
    return {"notification": {"id": uuid.uuid4().hex, "type": "welcome", "message": text}}


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
        got = [await client.next_event("notification:new") for _ in range(5)]
        assert [g["notification"]["message"] for g in got] == [f"p{i}" for i in range(5)]
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
        got = [await client.next_event("notification:new") for _ in range(5)]
        assert [g["notification"]["message"] for g in got] == [f"u{i}" for i in range(5)]
        answer = await client.call("presence:query", {"user_ids": [dave.id]})
        assert answer["ok"] is True
    finally:
        await client.close()
