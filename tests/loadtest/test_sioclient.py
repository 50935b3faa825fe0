"""The light Socket.IO client against a real python-socketio server in the same loop."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
import socketio
from aiohttp import web

from loadtest.sioclient import (
    SIO_ACK, SIO_CONNECT, SIO_CONNECT_ERROR, SIO_DISCONNECT, SIO_EVENT, ConnectRefused,
    ProtocolError, SioPacket, SocketIOClient, decode_packet, encode_packet, event_packet,
    websocket_url,
)

GOOD_TOKEN = "good-token"


@pytest.fixture
async def sio_server():
    """python-socketio AsyncServer on aiohttp, on a free port of 127.0.0.1."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    seen: dict[str, list] = {"connect_auth": [], "notes": []}

    @sio.event
    async def connect(sid, environ, auth):
        seen["connect_auth"].append(auth)
        if not auth or auth.get("token") != GOOD_TOKEN:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        await sio.enter_room(sid, "lobby")

    @sio.on("echo")
    async def echo(sid, data):
        return {"ok": True, "echo": data}

    @sio.on("note")
    async def note(sid, data):
        seen["notes"].append(data)

    @sio.on("shout")
    async def shout(sid, data):
        await sio.emit("shouted", data, room="lobby")
        return {"ok": True}

    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", sio, seen
    finally:
        await runner.cleanup()


@pytest.fixture
async def http_session():
    async with aiohttp.ClientSession() as session:
        yield session


def test_encodes_packets_like_python_socketio():
    from socketio.packet import Packet

    cases = [
        SioPacket(SIO_CONNECT, {"token": "t", "offset": "17"}),
        SioPacket(SIO_CONNECT),
        event_packet("message:send", {"conversation_id": "c1", "body": "hé", "client_id": "x"}),
        event_packet("message:send", {"a": 1}, ack_id=12),
        SioPacket(SIO_ACK, [{"ok": True}], ack_id=7),
        SioPacket(SIO_EVENT, ["typing", {"typing": False}], namespace="/chat"),
    ]
    for packet in cases:
        reference = Packet(packet.type, data=packet.data, namespace=packet.namespace,
                           id=packet.ack_id).encode()
        ours = encode_packet(packet)
        assert ours[0] == "4"
        # Same meaning: python-socketio decodes our frame to the same packet.
        decoded = Packet(encoded_packet=ours[1:])
        assert (decoded.packet_type, decoded.data, decoded.id) == (
            packet.type, packet.data, packet.ack_id)
        assert (decoded.namespace or "/") == packet.namespace
        # And we decode python-socketio's frame to the same packet.
        assert decode_packet(reference) == packet


def test_decodes_namespace_ack_id_and_connect_error():
    assert decode_packet('3/chat,42[{"ok":true}]') == SioPacket(SIO_ACK, [{"ok": True}], 42, "/chat")
    assert decode_packet('4{"message":"unauthorized"}') == SioPacket(
        SIO_CONNECT_ERROR, {"message": "unauthorized"})
    assert decode_packet("1") == SioPacket(SIO_DISCONNECT)
    assert decode_packet("0/admin") == SioPacket(SIO_CONNECT, None, None, "/admin")


@pytest.mark.parametrize("bad", ["", "x", "9[]", '51-["a",{"_placeholder":true,"num":0}]', "2[oops"])
def test_rejects_what_it_cannot_decode(bad):
    with pytest.raises(ProtocolError):
        decode_packet(bad)


def test_websocket_url():
    assert websocket_url("http://127.0.0.1:8080") == \
        "ws://127.0.0.1:8080/socket.io/?EIO=4&transport=websocket"
    assert websocket_url("https://example.test/", "/socket.io/") == \
        "wss://example.test/socket.io/?EIO=4&transport=websocket"


async def test_connects_with_auth_calls_with_ack_and_receives_events(sio_server, http_session):
    url, sio, seen = sio_server
    received: list[tuple[str, object]] = []
    got_event = asyncio.Event()

    def on_event(name, data):
        received.append((name, data))
        got_event.set()

    client = SocketIOClient(url, session=http_session,
                            auth={"token": GOOD_TOKEN, "offset": "5"}, on_event=on_event)
    await client.connect()
    try:
        assert client.connected and client.sid
        assert seen["connect_auth"][-1] == {"token": GOOD_TOKEN, "offset": "5"}

        ack = await client.call("echo", {"body": "hello", "n": 3})
        assert ack == {"ok": True, "echo": {"body": "hello", "n": 3}}

        await client.emit("note", [1, 2, 3])
        assert await client.call("shout", {"text": "hi room"}) == {"ok": True}
        await asyncio.wait_for(got_event.wait(), 5)
        assert received == [("shouted", {"text": "hi room"})]
        assert seen["notes"] == [[1, 2, 3]]

        # Server-initiated emit to this very socket.
        got_event.clear()
        await sio.emit("notification:new", {"offset": "9", "notification": {"id": "n1"}},
                       to=client.sid)
        await asyncio.wait_for(got_event.wait(), 5)
        assert received[-1] == ("notification:new", {"offset": "9", "notification": {"id": "n1"}})
    finally:
        await client.close()
    assert not client.connected
    assert client.closed.is_set()


async def test_refused_connect_raises_with_the_server_message(sio_server, http_session):
    url, _sio, _seen = sio_server
    client = SocketIOClient(url, session=http_session, auth={"token": "wrong"})
    with pytest.raises(ConnectRefused) as refused:
        await client.connect()
    assert refused.value.data == {"message": "unauthorized"}
    assert not client.connected
    with pytest.raises(ConnectionError):
        await client.emit("echo", {})


async def test_pending_ack_fails_when_server_disconnects(sio_server, http_session):
    url, sio, _seen = sio_server
    client = SocketIOClient(url, session=http_session, auth={"token": GOOD_TOKEN})
    await client.connect()
    await sio.disconnect(client.sid)
    await asyncio.wait_for(client.closed.wait(), 5)
    assert not client.connected
    with pytest.raises(ConnectionError):
        await client.call("echo", {})
    await client.close()
