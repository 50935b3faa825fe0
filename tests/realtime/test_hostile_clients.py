"""Engine.IO / Socket.IO against hostile and broken clients (realtime/protocol.py,
realtime/transport.py), with raw frames: the handshake reports the configured values,
bad requests are 400, malformed frames close the connection (counted, logged at debug
level, no traceback), sessions without a CONNECT are bounded in time and per address."""
from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import aiohttp
import pytest

from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

EIO = "/socket.io/?EIO=4"


class RawSocket:
    """A websocket speaking raw Engine.IO frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, handshake: dict[str, Any]) -> None:
        self.ws = ws
        self.handshake = handshake

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, url: str, sid: str | None = None) -> "RawSocket":
        ws = await session.ws_connect(f"{url}{EIO}&transport=websocket" + (f"&sid={sid}" if sid else ""))
        if sid is not None:
            return cls(ws, {})
        first = await ws.receive(timeout=10)
        assert first.type is aiohttp.WSMsgType.TEXT and first.data.startswith("0"), first
        return cls(ws, json.loads(first.data[1:]))

    async def send(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def next_text(self, timeout: float = 10) -> str | None:
        """The next text frame other than a ping (answered), or None once closed."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return None
            if msg.data == "2":
                await self.ws.send_str("3")
                continue
            if msg.data != "6":  # NOOP (e.g. what ended the poll of an upgraded session)
                return msg.data

    async def closed(self, timeout: float = 10) -> bool:
        """True once the server closed the connection (whatever it sent before)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.next_text() is not None:
                    pass
        except TimeoutError:
            return False
        return True

    async def connect(self, token: str, namespace: str = "") -> str:
        await self.send("40" + (namespace + "," if namespace else "") + json.dumps({"token": token}))
        answer = await self.next_text()
        assert answer is not None and answer.startswith("40" + (namespace + "," if namespace else "") + "{"), answer
        return answer

    async def answers(self, ack_id: int = 7) -> bool:
        """A presence:query with an ack is answered (the socket is live and authenticated)."""
        await self.send(f'42{ack_id}["presence:query",{{"user_ids":[]}}]')
        return await self.next_text() == f'43{ack_id}[{{"ok":true,"online":[]}}]'


async def poll_open(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}{EIO}&transport=polling") as resp:
        assert resp.status == 200
        body = await resp.text()
    assert body.startswith("0")
    return json.loads(body[1:])


async def metric(session: aiohttp.ClientSession, url: str, name: str, reason: str) -> float:
    async with session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    found = re.search(rf'^{name}{{reason="{reason}"}} ([0-9.e+]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def test_handshake_reports_the_configured_values_exactly_sub_second_included(start_instance, http):
    async with start_instance(socket_ping_interval_ms=750, socket_ping_timeout_ms=250,
                              socket_max_payload_bytes=12345) as inst:
        polling = await poll_open(http, inst.url)
        sock = await RawSocket.open(http, inst.url)
        await sock.ws.close()
    for handshake, upgrades in ((polling, ["websocket"]), (sock.handshake, [])):
        assert handshake["pingInterval"] == 750 and handshake["pingTimeout"] == 250
        assert handshake["maxPayload"] == 12345 and handshake["upgrades"] == upgrades


async def test_invalid_transport_or_request_method_is_400(instance_a, http):
    for query in ("", "&transport=abc", "&transport=websocket2"):
        async with http.get(f"{instance_a.url}{EIO}{query}") as resp:
            assert resp.status == 400, query
    for method in ("PUT", "DELETE", "PATCH"):
        async with http.request(method, f"{instance_a.url}{EIO}&transport=polling") as resp:
            assert resp.status == 400, method
    async with http.post(f"{instance_a.url}{EIO}&transport=polling", data="40") as resp:
        assert resp.status == 400  # a POST without a session


async def test_unknown_namespace_gets_the_reference_error_and_the_session_stays(api, instance_a, http):
    account = await api.register("hnsp")
    sock = await RawSocket.open(http, instance_a.url)
    await sock.send("40/nowhere,")
    assert await sock.next_text() == '44/nowhere,{"message":"Invalid namespace"}'
    await sock.connect(account.token)
    assert await sock.answers()
    await sock.ws.close()


async def test_namespace_disconnect_leaves_the_engineio_session_open(api, instance_a, http):
    account = await api.register("hdis")
    sock = await RawSocket.open(http, instance_a.url)
    await sock.connect(account.token)
    await sock.send("41")
    await sock.connect(account.token)  # the same Engine.IO session connects again
    assert await sock.answers()
    await sock.ws.close()


MALFORMED = [
    b"\x00\x01binary", "", "x", "0", "2", "7", "9abc", "bAQID", "3junk", "1x",
    "4", "4abc", "47", "42", "42{}", "42[]", "42[1]", '42"text"', '42abc["x"]', "42[", "4" + "[" * 5000,
    '451-["x",{"_placeholder":true,"num":0}]', '49999999999-["x"]', '461-1[{"_placeholder":true,"num":0}]',
    "43[]", '43x["a"]', '41{"a":1}', "4112", '4012{"token":"x"}',
    '421234567890123456["x"]', "40/" + "n" * 300 + ",",
    '42/nowhere,["x"]',  # a namespace not joined
]


@pytest.mark.parametrize("authenticated", [False, True])
async def test_malformed_frames_close_the_connection_counted_without_traceback(
        api, start_instance, http, caplog, authenticated):
    account = await api.register("hmal")
    caplog.set_level(logging.DEBUG)
    async with start_instance(socket_max_payload_bytes=20000) as inst:
        before = sum([await metric(http, inst.url, "pulse_socketio_malformed_frames_total", r)
                      for r in ("binary", "engineio", "socketio", "state")])
        frames = [*MALFORMED, "4" + "x" * 30000]  # beyond maxPayload
        for frame in frames:
            sock = await RawSocket.open(http, inst.url)
            if authenticated:
                await sock.connect(account.token)
            await sock.send(frame)
            assert await sock.closed(), frame
        if not authenticated:  # before any CONNECT: events and DISCONNECT for "/" are out of place too
            for frame in ('42["presence:query",{}]', "41", "43[1]"):
                sock = await RawSocket.open(http, inst.url)
                await sock.send(frame)
                assert await sock.closed(), frame
                frames.append(frame)
        else:  # a second CONNECT to a joined namespace
            sock = await RawSocket.open(http, inst.url)
            await sock.connect(account.token)
            await sock.send("40" + json.dumps({"token": account.token}))
            assert await sock.closed()
            frames.append("40")
        after = sum([await metric(http, inst.url, "pulse_socketio_malformed_frames_total", r)
                     for r in ("binary", "engineio", "socketio", "state")])
        too_large = await metric(http, inst.url, "pulse_socketio_malformed_frames_total", "websocket")
    assert after - before + too_large >= len(frames)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert any("malformed frame" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


async def test_malformed_polling_payloads_close_the_session(instance_a, http):
    for body in (b"4abc", b"\xff\xfe", b"x", b"4" + b'42["x"]\x1e' * 20, b"2", b"bAQID"):
        sid = (await poll_open(http, instance_a.url))["sid"]
        async with http.post(f"{instance_a.url}{EIO}&transport=polling&sid={sid}", data=body) as resp:
            status = resp.status
        assert status in (200, 400)  # 200: refused by the Socket.IO layer, behind the Engine.IO answer

        async def gone() -> bool:
            async with http.get(f"{instance_a.url}{EIO}&transport=polling&sid={sid}") as resp:
                return resp.status == 400
        await eventually(gone, timeout=10, interval=0.1)


async def test_a_session_that_never_connects_is_closed_after_the_connect_timeout(api, start_instance, http):
    account = await api.register("hcto")
    async with start_instance(socket_connect_timeout_ms=300) as inst:
        live = await RawSocket.open(http, inst.url)
        await live.connect(account.token)
        idle = await RawSocket.open(http, inst.url)
        sid = (await poll_open(http, inst.url))["sid"]
        assert await idle.closed()

        async def polling_gone() -> bool:
            async with http.get(f"{inst.url}{EIO}&transport=polling&sid={sid}") as resp:
                return resp.status == 400
        await eventually(polling_gone, timeout=10, interval=0.1)
        assert await live.answers()  # connected in time: kept
        assert await metric(http, inst.url, "pulse_socketio_sessions_refused_total", "connect_timeout") >= 2
        await live.ws.close()


async def test_sessions_without_a_socketio_connection_do_not_hold_up_shutdown(api, start_instance, http):
    """At shutdown the instance closes every Engine.IO session, also one that left its
    namespace, one that never connected and a polling one whose poll is pending (none of
    them would time out for minutes), so its shutdown is not left waiting for them (aiohttp
    waits up to its shutdown timeout for open requests: 60 s in tests, the
    ``SHUTDOWN_TIMEOUT_SECONDS`` of ``pulse serve``)."""
    from server.cli import SHUTDOWN_TIMEOUT_SECONDS

    account = await api.register("hshut")
    loop = asyncio.get_running_loop()
    async with start_instance(socket_connect_timeout_ms=600_000, socket_ping_interval_ms=600_000) as inst:
        left = await RawSocket.open(http, inst.url)
        await left.connect(account.token)
        await left.send("41")  # leaves the namespace; the Engine.IO session stays
        never = await RawSocket.open(http, inst.url)
        sid = (await poll_open(http, inst.url))["sid"]
        poll = asyncio.ensure_future(http.get(f"{inst.url}{EIO}&transport=polling&sid={sid}"))
        await asyncio.sleep(0.3)
        assert not poll.done() and not left.ws.closed  # all three open
        closing_started = loop.time()
    took = loop.time() - closing_started
    assert took < SHUTDOWN_TIMEOUT_SECONDS, f"shutdown took {took:.1f}s"
    assert await left.closed(timeout=5) and await never.closed(timeout=5)
    answered = await asyncio.wait_for(poll, 5)  # answered, not left hanging
    answered.release()


async def test_sessions_without_connect_are_capped_per_address_under_concurrency(api, start_instance, http):
    account = await api.register("hcap")
    async with start_instance(socket_pending_per_address=3) as inst:
        async def handshake() -> int:
            async with http.get(f"{inst.url}{EIO}&transport=polling") as resp:
                return resp.status
        statuses = await asyncio.gather(*(handshake() for _ in range(10)))
        assert sorted(statuses) == [200] * 3 + [429] * 7
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await RawSocket.open(http, inst.url)
        assert refused.value.status == 429
        assert await metric(http, inst.url, "pulse_socketio_sessions_refused_total", "pending_per_address") == 8
    async with start_instance(socket_pending_per_address=2) as inst:
        first = await RawSocket.open(http, inst.url)
        second = await RawSocket.open(http, inst.url)
        await first.connect(account.token)  # connected: no longer pending
        third = await RawSocket.open(http, inst.url)
        await second.ws.close()

        async def room_again() -> bool:
            try:
                sock = await RawSocket.open(http, inst.url)
            except aiohttp.WSServerHandshakeError:
                return False
            await sock.ws.close()
            return True
        await eventually(room_again, timeout=10, interval=0.1)
        assert await first.answers()
        await first.ws.close()
        await third.ws.close()


async def test_a_second_websocket_for_an_upgraded_session_is_closed_and_the_first_kept(api, instance_a, http):
    account = await api.register("hupg")
    sid = (await poll_open(http, instance_a.url))["sid"]
    upgraded = await RawSocket.open(http, instance_a.url, sid=sid)
    await upgraded.send("2probe")
    assert await upgraded.next_text() == "3probe"
    await upgraded.send("5")
    second = await RawSocket.open(http, instance_a.url, sid=sid)
    assert await second.closed()
    async with http.get(f"{instance_a.url}{EIO}&transport=polling&sid={sid}") as resp:
        assert resp.status == 400  # no more polling once upgraded
    await upgraded.connect(account.token)
    assert await upgraded.answers()
    await upgraded.send("4abc")  # the upgraded path closes on malformed frames too
    assert await upgraded.closed()
