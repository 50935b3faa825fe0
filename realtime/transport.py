"""A leaner Engine.IO websocket transport under python-socketio (same wire protocol).

Stock engineio keeps, per websocket, a writer task fed by a queue, a new task for every
receive and a sleeping task per ping cycle: ~30 µs of CPU per outgoing packet and
~32 KB per idle connection. Here, for a socket that opened directly on the websocket
transport (what every standard client does by default):

- packets are written straight to the socket's transport as ready-made websocket
  frames (no queue, no task switch); room fan-out encodes a frame once and writes the
  same bytes to every recipient (``write_frame``);
- the receive loop awaits the websocket directly (no task per message, no timeout
  object per receive);
- ping and pong deadlines of all sockets sit in two deques under two timers
  (``Deadlines``), not a task or a TimerHandle per socket; an unanswered ping drops the
  socket;
- once live, the socket's engineio queue and connect environ are released, and no
  permessage-deflate context is negotiated (``LeanWebSocket``): what stays per idle
  socket is mostly aiohttp's request handler and its coroutine chain.

Long-polling, and sockets that upgrade from polling to websocket, keep engineio's own
code path (queue + writer). A client that does not read (its kernel and transport
buffers full beyond ``max_buffered_bytes``) is dropped at the transport level; it
reconnects and resumes from its offset.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import struct
import time
from typing import Any

import engineio
import socketio
from aiohttp import WSMsgType, web
from engineio import async_socket, exceptions as eio_exceptions, packet as eio_packet
from engineio.async_drivers import aiohttp as aiohttp_driver

log = logging.getLogger("pulse.realtime.transport")

# Beyond this much unsent data for one socket, the client is too slow: drop it.
DEFAULT_MAX_BUFFERED_BYTES = 4 * 1024 * 1024


def ws_frame(payload: str | bytes) -> bytes:
    """One unmasked, unfragmented, uncompressed server-to-client websocket frame
    (RFC 6455 5.2; uncompressed is always allowed, even with permessage-deflate)."""
    if isinstance(payload, str):
        data, first = payload.encode(), 0x81  # FIN + text
    else:
        data, first = payload, 0x82  # FIN + binary
    n = len(data)
    if n < 126:
        return bytes((first, n)) + data
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + data
    return struct.pack("!BBQ", first, 127, n) + data


def packet_frame(pkt: eio_packet.Packet) -> bytes:
    return ws_frame(pkt.encode())


PING_FRAME = ws_frame(eio_packet.Packet(eio_packet.PING).encode())


class _SpentQueue:
    """Stands in for engineio's per-socket ``asyncio.Queue`` once a socket writes
    directly (an idle Queue with its Event and three deques is ~3 KB a socket). Nothing
    is queued any more; what engineio still puts after the websocket ended is dropped,
    as it would be by the stock writer, which has exited by then."""

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    def put_nowait(self, item: Any) -> None:
        pass

    async def put(self, item: Any) -> None:
        pass

    def get_nowait(self) -> Any:
        raise asyncio.QueueEmpty

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass


SPENT_QUEUE = _SpentQueue()


class Deadlines:
    """Sockets to check after one fixed delay, in one deque under one timer (instead of a
    TimerHandle per socket): with the same delay for every entry, entries are appended
    in due order, so only the head needs a timer."""

    def __init__(self, delay: float, check: Any) -> None:
        self.delay = delay
        self.check = check  # check(sock, stamp), called once the delay has passed
        self.entries: collections.deque[tuple[float, Any, Any]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, sock: Any, stamp: Any = None) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.delay
        self.entries.append((due, sock, stamp))
        if self._timer is None:
            self._timer = loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        entries = self.entries
        while entries and entries[0][0] <= now:
            _, sock, stamp = entries.popleft()
            try:
                self.check(sock, stamp)
            except Exception:  # noqa: BLE001 - one socket must not stop the others' checks
                log.exception("socket timer check failed")
        if entries:
            self._timer = loop.call_at(entries[0][0], self._fire)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.entries.clear()


class LeanWebSocket(aiohttp_driver.WebSocket):
    """engineio's aiohttp websocket wrapper (used for upgrades from long-polling; direct
    websockets are served by ``DirectSocket.serve_websocket``), without per-connection
    compression: a permessage-deflate context is hundreds of KB per socket."""

    async def __call__(self, environ: dict) -> web.WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock


class DirectSocket(async_socket.AsyncSocket):
    """An engineio socket that writes websocket frames directly once it is live."""

    # Set while the socket is live on its own websocket; None for polling/upgrades.
    _transport: asyncio.Transport | None = None
    _ws: web.WebSocketResponse | None = None
    _ping_task: asyncio.Task | None = None
    _timed_out = False

    @property
    def direct(self) -> bool:
        return self._transport is not None

    def write_frame(self, frame: bytes) -> bool:
        """Writes a ready-made frame; False when the socket is not live on its websocket
        (the caller then sends the packet through engineio)."""
        transport = self._transport
        if transport is None:
            return False
        if transport.is_closing():
            return True  # going away: its disconnect is on its way
        transport.write(frame)
        if transport.get_write_buffer_size() > self.server.max_buffered_bytes:
            log.warning("socket %s does not read; dropping it", self.sid)
            transport.abort()
        return True

    async def send(self, pkt: eio_packet.Packet) -> None:
        if self._transport is None:
            await super().send(pkt)
            return
        if not await self.check_ping_timeout():
            return
        self.write_frame(packet_frame(pkt))

    def schedule_ping(self) -> None:
        # As stock: a new ping cycle starts once the previous one was answered.
        if self.last_ping:
            self.last_ping = None
            self.server.ping_due.add(self)

    def ping_due(self) -> None:
        if self.closing or self.closed:
            return
        self.last_ping = stamp = time.time()
        if self.write_frame(PING_FRAME):
            # The receive loop has no timeout of its own: an unanswered ping ends it.
            self.server.pong_due.add(self, stamp)
        else:  # polling: through the queue (engineio's poll timeout covers the rest)
            self._ping_task = asyncio.ensure_future(self.send(eio_packet.Packet(eio_packet.PING)))

    def pong_due(self, stamp: float) -> None:
        """The ping sent at ``stamp`` is unanswered after ``ping_timeout``: the client is gone."""
        if self.last_ping != stamp or self._transport is None or self.closing or self.closed:
            return
        log.info("socket %s did not answer a ping; dropping it", self.sid)
        self._timed_out = True
        self._transport.abort()  # the receive loop ends and closes the socket

    async def close_transport(self) -> None:
        """Ends the connection without a CLOSE packet: clients take it as a transport
        close and reconnect (by themselves, possibly to another instance)."""
        if self._ws is not None:
            await self._ws.close()
        else:
            await self.queue.put(None)  # engineio's writer closes the websocket / ends the poll

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        await super().close(wait=wait and self._transport is None, abort=abort, reason=reason)

    async def serve_websocket(self, environ: dict) -> Any:
        """Serves a socket opened directly on the websocket transport from this one
        coroutine (not engineio's handle_get_request → _upgrade_websocket → wrapper →
        handler chain: each of those frames would be kept for the socket's lifetime)."""
        connections = [c.strip() for c in environ.get("HTTP_CONNECTION", "").lower().split(",")]
        if "upgrade" not in connections or self.upgraded:
            return await self.handle_get_request(environ)  # engineio's answer to these
        sock = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
        await sock.prepare(environ["aiohttp.request"])
        await self._serve_direct(sock, environ)
        return sock

    async def _websocket_handler(self, ws: Any) -> None:
        if self.connected:
            # An upgrade from long-polling: engineio's own path (queue + writer).
            await super()._websocket_handler(ws)
            return
        environ, ws.environ = ws.environ, None
        await self._serve_direct(ws._sock, environ)

    async def _serve_direct(self, sock: web.WebSocketResponse, environ: dict) -> None:
        self.connected = True
        self.upgraded = True
        writer = sock._writer
        transport = writer.transport if writer is not None else None
        if transport is None:
            return
        # The queue holds the OPEN packet (and whatever was sent before the websocket was
        # ready): write it in order, then go direct, with no await in between.
        while not self.queue.empty():
            pkt = self.queue.get_nowait()
            self.queue.task_done()
            if pkt is not None:
                transport.write(packet_frame(pkt))
        self.queue = SPENT_QUEUE
        self._transport = transport
        self._ws = sock
        # The connect environ (every request header, WSGI style) would stay referenced by
        # the request's coroutine frames and python-socketio for the socket's lifetime.
        # Our connect handler does not read it (auth comes in the CONNECT packet).
        environ.clear()
        max_size = self.server.max_http_buffer_size
        try:
            while True:
                msg = await sock.receive()
                if msg.type is not WSMsgType.TEXT and msg.type is not WSMsgType.BINARY:
                    break
                if len(msg.data) > max_size:
                    break
                try:
                    await self.receive(eio_packet.Packet(encoded_packet=msg.data))
                except eio_exceptions.UnknownPacketError:
                    pass
                except eio_exceptions.SocketIsClosedError:
                    break
                except Exception:  # noqa: BLE001 - as engineio: log, keep the connection
                    log.exception("socket receive failed")
        except asyncio.CancelledError:
            pass
        finally:
            self._transport = None
            self._ws = None
            if not sock.closed:
                try:
                    await sock.close()
                except Exception:  # noqa: BLE001 - the peer is gone already
                    pass
        reason = self.server.reason.PING_TIMEOUT if self._timed_out else self.server.reason.TRANSPORT_CLOSE
        await self.close(wait=False, abort=True, reason=reason)


class DirectEngineServer(engineio.AsyncServer):
    """engineio's server, creating ``DirectSocket``s."""

    def __init__(self, *args: Any, max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_buffered_bytes = max_buffered_bytes
        self._async = {**self._async, "websocket": LeanWebSocket}
        # Ping and pong deadlines of all direct sockets: two timers, not one per socket.
        self.ping_due = Deadlines(self.ping_interval, lambda sock, _: sock.ping_due())
        self.pong_due = Deadlines(self.ping_timeout, lambda sock, stamp: sock.pong_due(stamp))

    async def shutdown(self) -> None:
        self.ping_due.cancel()
        self.pong_due.cancel()
        await super().shutdown()

    async def _handle_connect(self, environ, transport, jsonp_index=None):
        """engineio 4's ``_handle_connect``, creating a ``DirectSocket`` (engineio names
        its socket class inside this method, so it is repeated here)."""
        if self.start_service_task:
            self.start_service_task = False
            self.service_task_handle = self.start_background_task(self._service_task)

        sid = self.generate_id()
        s = DirectSocket(self, sid)
        self.sockets[sid] = s

        # Not held in a local: this frame lives as long as the websocket does.
        await s.send(eio_packet.Packet(eio_packet.OPEN, {
            "sid": sid,
            "upgrades": self._upgrades(sid, transport),
            "pingTimeout": int(self.ping_timeout * 1000),
            "pingInterval": int(self.ping_interval + self.ping_interval_grace_period) * 1000,
            "maxPayload": self.max_http_buffer_size,
        }))

        ret = await self._trigger_event("connect", sid, environ, run_async=False)
        if ret is not None and ret is not True:
            del self.sockets[sid]
            self.logger.warning("Application rejected connection")
            return self._unauthorized(ret or None)

        s.schedule_ping()

        if transport == "websocket":
            ret = await s.serve_websocket(environ)
            if s.closed and sid in self.sockets:
                del self.sockets[sid]
            return ret
        s.connected = True
        headers = None
        if self.cookie:
            cookie = self.cookie if isinstance(self.cookie, dict) else {
                "name": self.cookie, "path": "/", "SameSite": "Lax"}
            headers = [("Set-Cookie", self._generate_sid_cookie(sid, cookie))]
        try:
            return self._ok(await s.poll(), headers=headers, jsonp_index=jsonp_index)
        except eio_exceptions.QueueEmpty:
            return self._bad_request()


class DirectSocketServer(socketio.AsyncServer):
    """python-socketio's server on ``DirectEngineServer``."""

    def _engineio_server_class(self):
        return DirectEngineServer
