"""A light asyncio Socket.IO client: Engine.IO v4 over a websocket, Socket.IO v5 packets.

Load generation needs thousands of sockets on a core or two; python-socketio's client
(and locust's Socket.IO user) cost a task, a queue and several layers per packet. This
client is one aiohttp websocket and one reader task per socket: text packets only (no
binary attachments, no long-polling), the default namespace unless told otherwise.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

# Engine.IO v4 packet types (first character of every websocket text frame).
EIO_OPEN, EIO_CLOSE, EIO_PING, EIO_PONG, EIO_MESSAGE, EIO_UPGRADE, EIO_NOOP = "0123456"

# Socket.IO v5 packet types (first character of an Engine.IO message's payload).
SIO_CONNECT, SIO_DISCONNECT, SIO_EVENT, SIO_ACK, SIO_CONNECT_ERROR = 0, 1, 2, 3, 4
SIO_BINARY_EVENT, SIO_BINARY_ACK = 5, 6

EventHandler = Callable[[str, Any], None]


class ProtocolError(ValueError):
    """A frame that is not a packet this client understands."""


class ConnectRefused(ConnectionError):
    """The server answered CONNECT with CONNECT_ERROR (e.g. ``unauthorized``)."""

    def __init__(self, data: Any):
        self.data = data
        message = data.get("message") if isinstance(data, dict) else data
        super().__init__(f"connect refused: {message}")


@dataclass(frozen=True)
class SioPacket:
    type: int
    data: Any = None
    ack_id: int | None = None
    namespace: str = "/"


def encode_packet(packet: SioPacket) -> str:
    """Socket.IO packet → the Engine.IO MESSAGE frame that carries it."""
    if packet.type in (SIO_BINARY_EVENT, SIO_BINARY_ACK):
        raise ProtocolError("binary packets are not supported")
    parts = [EIO_MESSAGE, str(packet.type)]
    if packet.namespace != "/":
        parts.append(packet.namespace + ",")
    if packet.ack_id is not None:
        parts.append(str(packet.ack_id))
    text = "".join(parts)
    if packet.data is not None:
        text += orjson.dumps(packet.data).decode()
    return text


def decode_packet(payload: str) -> SioPacket:
    """Payload of an Engine.IO MESSAGE (the frame without its leading ``4``) → packet."""
    if not payload or not payload[0].isdigit():
        raise ProtocolError(f"not a Socket.IO packet: {payload[:40]!r}")
    packet_type = int(payload[0])
    if packet_type > SIO_BINARY_ACK:
        raise ProtocolError(f"unknown Socket.IO packet type {packet_type}")
    if packet_type in (SIO_BINARY_EVENT, SIO_BINARY_ACK):
        raise ProtocolError("binary packets are not supported")
    pos = 1
    namespace = "/"
    if pos < len(payload) and payload[pos] == "/":
        end = payload.find(",", pos)
        if end < 0:
            namespace, pos = payload[pos:], len(payload)
        else:
            namespace, pos = payload[pos:end], end + 1
    start = pos
    while pos < len(payload) and payload[pos].isdigit():
        pos += 1
    ack_id = int(payload[start:pos]) if pos > start else None
    try:
        data = orjson.loads(payload[pos:]) if pos < len(payload) else None
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"bad JSON in packet: {payload[:80]!r}") from exc
    return SioPacket(packet_type, data, ack_id, namespace)


def event_packet(event: str, *args: Any, ack_id: int | None = None,
                 namespace: str = "/") -> SioPacket:
    return SioPacket(SIO_EVENT, [event, *args], ack_id, namespace)


def websocket_url(base_url: str, path: str = "/socket.io") -> str:
    """``http://h:p`` → ``ws://h:p/socket.io/?EIO=4&transport=websocket``."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, path.rstrip("/") + "/",
                       "EIO=4&transport=websocket", ""))


class SocketIOClient:
    """One Socket.IO connection. ``on_event(name, data)`` is called for server events.

    Handlers run on the reader task: keep them short and non-blocking.
    """

    def __init__(self, base_url: str, *, session: aiohttp.ClientSession,
                 auth: dict | None = None, on_event: EventHandler | None = None,
                 namespace: str = "/", path: str = "/socket.io"):
        self.url = websocket_url(base_url, path)
        self.session = session
        self.auth = auth
        self.on_event = on_event
        self.namespace = namespace
        self.sid: str | None = None
        self.connected = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None
        self._ack_ids = itertools.count(1)
        self._acks: dict[int, asyncio.Future] = {}
        self._connected: asyncio.Future | None = None
        self.closed = asyncio.Event()

    async def connect(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self._ws = await self.session.ws_connect(self.url, timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
                                                 autoping=True, max_msg_size=0)
        try:
            opening = await asyncio.wait_for(self._ws.receive(), timeout)
            if opening.type != aiohttp.WSMsgType.TEXT or not opening.data.startswith(EIO_OPEN):
                raise ProtocolError(f"expected Engine.IO OPEN, got {opening.data!r}")
            await self._ws.send_str(encode_packet(SioPacket(SIO_CONNECT, self.auth,
                                                            namespace=self.namespace)))
            self._reader = asyncio.create_task(self._read())
            await asyncio.wait_for(asyncio.shield(self._connected), timeout)
        except BaseException:
            await self.close()
            raise

    async def emit(self, event: str, *args: Any) -> None:
        await self._send(event_packet(event, *args, namespace=self.namespace))

    async def call(self, event: str, *args: Any, timeout: float = 10.0) -> Any:
        """Emit with an acknowledgement id and wait for the server's ack (first value)."""
        ack_id = next(self._ack_ids)
        future = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        try:
            await self._send(event_packet(event, *args, ack_id=ack_id, namespace=self.namespace))
            values = await asyncio.wait_for(future, timeout)
        finally:
            self._acks.pop(ack_id, None)
        return values[0] if len(values) == 1 else (values or None)

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            try:
                if self.connected:
                    await ws.send_str(encode_packet(SioPacket(SIO_DISCONNECT,
                                                              namespace=self.namespace)))
                await ws.close()
            except (aiohttp.ClientError, ConnectionError, RuntimeError):
                pass
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            try:
                await self._reader
            except BaseException:
                pass
        self._finish(ConnectionError("connection closed"))

    async def _send(self, packet: SioPacket) -> None:
        if self._ws is None or not self.connected:
            raise ConnectionError("not connected")
        await self._ws.send_str(encode_packet(packet))

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame: str = message.data
                kind = frame[:1]
                if kind == EIO_PING:
                    await ws.send_str(EIO_PONG + frame[1:])
                elif kind == EIO_MESSAGE:
                    packet = decode_packet(frame[1:])
                    if packet.type == SIO_DISCONNECT and packet.namespace == self.namespace:
                        # One namespace per connection here: its end is the socket's end.
                        self._finish(ConnectionError("disconnected by the server"))
                        await ws.close()
                        return
                    self._dispatch(packet)
                elif kind == EIO_CLOSE:
                    break
        except (aiohttp.ClientError, ConnectionError, ProtocolError) as exc:
            self._finish(exc)
            return
        finally:
            self.connected = False
        self._finish(ConnectionError("server closed the connection"))

    def _dispatch(self, packet: SioPacket) -> None:
        if packet.namespace != self.namespace:
            return
        if packet.type == SIO_EVENT:
            if self.on_event is not None and isinstance(packet.data, list) and packet.data:
                self.on_event(packet.data[0], packet.data[1] if len(packet.data) > 1 else None)
        elif packet.type == SIO_ACK:
            future = self._acks.get(packet.ack_id) if packet.ack_id is not None else None
            if future is not None and not future.done():
                future.set_result(packet.data if isinstance(packet.data, list) else [packet.data])
        elif packet.type == SIO_CONNECT:
            self.sid = (packet.data or {}).get("sid")
            self.connected = True
            if self._connected is not None and not self._connected.done():
                self._connected.set_result(None)
        elif packet.type == SIO_CONNECT_ERROR:
            if self._connected is not None and not self._connected.done():
                self._connected.set_exception(ConnectRefused(packet.data))

    def _finish(self, exc: BaseException) -> None:
        self.connected = False
        for future in (self._connected, *self._acks.values()):
            if future is not None and not future.done():
                future.set_exception(exc)
                # Whoever waits still gets it; nobody waiting is not worth a warning.
                future.exception()
        self.closed.set()
