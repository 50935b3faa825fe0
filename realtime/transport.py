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
code path (queue + writer).

Slow consumers (``OutboundBudget``): a client that does not read fills its kernel buffers,
then its transport's. Past ``max_buffered_bytes`` of unsent data on one socket, or when
all sockets' unsent data passes ``instance_max_buffered_bytes`` (then the one with the
most is dropped), the socket is dropped at the transport level; its client reconnects and
resumes from its offset. A polling socket may have ``max_queued_packets`` in its queue.

Client events (``DirectSocketServer``): at most ``max_inflight_events`` handlers per socket
run at once and ``max_queued_events`` more wait (in order, parsed, no task); an event
beyond both gets ``busy_ack`` as its acknowledgement at once (one without an ack id is
dropped), so no client can pile up tasks or memory.

Against hostile and broken clients (Engine.IO v4 / Socket.IO v5 as the reference server
behaves): every frame is decoded strictly (realtime/protocol.py) and a malformed one
closes the connection (logged at debug level, counted); an invalid transport or request
method is 400; a session that has not connected a namespace within the connect timeout
is closed, and one client address holds at most ``pending_per_address`` such sessions;
a second websocket for an already upgraded session is accepted and closed at once.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import struct
import time
from typing import Any, Callable

import engineio
import socketio
from aiohttp import WSMsgType, web
from engineio import async_socket, exceptions as eio_exceptions, packet as eio_packet
from engineio.async_drivers import aiohttp as aiohttp_driver
from socketio import packet as sio_packet

from kernel.tasks import cancel_and_wait
from realtime.protocol import ACK, CONNECT, DISCONNECT, EVENT, MalformedFrame, decode_engineio, decode_payload, parse_socketio

log = logging.getLogger("pulse.realtime.transport")

# Beyond this much unsent data for one socket, the client is too slow: drop it.
DEFAULT_MAX_BUFFERED_BYTES = 1024 * 1024
DEFAULT_INSTANCE_MAX_BUFFERED_BYTES = 256 * 1024 * 1024
# How often the backlog of sockets that stopped being written to is measured again.
BACKLOG_SWEEP_SECONDS = 0.5
# A replay paces itself to its client (``drained``); one that takes no data for this long
# is dropped.
DRAIN_TIMEOUT_SECONDS = 10.0


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
# A websocket close frame, status 1002 (protocol error): sent before the connection is
# closed on a malformed frame, without waiting for the client's answer.
PROTOCOL_ERROR_CLOSE_FRAME = bytes((0x88, 2)) + struct.pack("!H", 1002)
# What a session refused before its handshake gets (an HTTP answer, as engineio's 400s).
TOO_MANY_PENDING = {"status": "429 TOO MANY REQUESTS", "headers": [("Content-Type", "text/plain")],
                    "response": b'"Too many sessions without a Socket.IO connection from this address"'}


class MalformedPayload(eio_exceptions.EngineIOError):
    """A long-polling POST that is not a valid payload: engineio answers 400 and closes."""


def close_with_protocol_error(transport: asyncio.BaseTransport | None) -> None:
    """Sends a close frame and closes the TCP connection (buffered data is flushed first)."""
    if transport is not None and not transport.is_closing():
        transport.write(PROTOCOL_ERROR_CLOSE_FRAME)
        transport.close()


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
        # How late the timer fired for the entry being checked (seconds).
        self.late = 0.0

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
            due, sock, stamp = entries.popleft()
            self.late = now - due
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


class OutboundBudget:
    """Unsent data of this instance's direct sockets. Only sockets with a backlog are
    tracked (a socket whose client reads has none after a write): each write records the
    socket's backlog, and a timer re-measures the tracked ones while any are left, so the
    total is current to within ``BACKLOG_SWEEP_SECONDS`` for sockets no longer written to."""

    def __init__(self, per_socket: int, per_instance: int) -> None:
        self.per_socket = per_socket
        self.per_instance = per_instance
        # What a paced sender (a replay) keeps unsent at most: far under either budget.
        self.pace_bytes = min(64 * 1024, per_socket // 2, per_instance // 4)
        self.backlogs: dict["DirectSocket", int] = {}
        self.total = 0
        self.dropped = 0  # sockets dropped for being too slow, since start
        self._sweep: asyncio.TimerHandle | None = None

    def record(self, sock: "DirectSocket", transport: asyncio.Transport) -> None:
        """After a write to ``sock``: drops it, or another, when a budget is passed."""
        size = transport.get_write_buffer_size()
        if size > self.per_socket:
            log.warning("socket %s does not read (%d bytes unsent); dropping it", sock.sid, size)
            self.drop(sock)
            return
        self._set(sock, size)
        if self.total > self.per_instance:
            slowest = max(self.backlogs, key=self.backlogs.__getitem__)
            log.warning("unsent data of all sockets past %d bytes; dropping the slowest, %s (%d bytes)",
                        self.per_instance, slowest.sid, self.backlogs[slowest])
            self.drop(slowest)

    def _set(self, sock: "DirectSocket", size: int) -> None:
        self.total += size - self.backlogs.get(sock, 0)
        if size:
            self.backlogs[sock] = size
            if self._sweep is None:
                self._sweep = asyncio.get_running_loop().call_later(BACKLOG_SWEEP_SECONDS, self._measure)
        else:
            self.backlogs.pop(sock, None)

    def forget(self, sock: "DirectSocket") -> None:
        self.total -= self.backlogs.pop(sock, 0)

    def drop(self, sock: "DirectSocket") -> None:
        self.forget(sock)
        self.dropped += 1
        transport = sock._transport
        if transport is not None:
            transport.abort()  # the receive loop ends and closes the socket

    def _measure(self) -> None:
        self._sweep = None
        for sock in list(self.backlogs):
            transport = sock._transport
            self._set(sock, transport.get_write_buffer_size() if transport is not None else 0)

    def cancel(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None


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

    async def wait(self) -> str:
        """The next text frame, checked before engineio decodes it: a malformed frame
        closes the connection (the OSError ends engineio's receive loop)."""
        msg = await self._sock.receive()
        if msg.type is WSMsgType.TEXT:
            try:
                decode_engineio(msg.data)
                return msg.data
            except MalformedFrame as exc:
                reason = exc.reason
        elif msg.type is WSMsgType.BINARY:
            reason = "binary"
        elif msg.type is WSMsgType.ERROR:
            reason = "websocket"
        else:
            raise OSError()
        self.server.note_malformed(reason, None)
        close_with_protocol_error(self._sock._writer.transport if self._sock._writer is not None else None)
        raise OSError()


class DirectSocket(async_socket.AsyncSocket):
    """An engineio socket that writes websocket frames directly once it is live."""

    # Set while the socket is live on its own websocket; None for polling/upgrades.
    _transport: asyncio.Transport | None = None
    _ws: web.WebSocketResponse | None = None
    _ping_task: asyncio.Task | None = None
    _timed_out = False
    # The client address while the session has not connected a namespace (counted
    # against ``pending_per_address``); None once it has, or once the session is gone.
    pending_address: str | None = None
    # Whether a Socket.IO namespace was ever connected on this session.
    joined = False
    _drop_task: asyncio.Task | None = None

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
        if transport.get_write_buffer_size():
            self.server.outbound.record(self, transport)
        elif self in self.server.outbound.backlogs:
            self.server.outbound.forget(self)
        return True

    async def drained(self, timeout: float = DRAIN_TIMEOUT_SECONDS) -> bool:
        """Waits until at most ``outbound.pace_bytes`` are unsent (half the queue's bound,
        when polling): a replay of many events paces itself to the client instead of
        passing a budget at once. False (and the socket dropped) when the client takes
        nothing in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        server = self.server
        while not self.closed:
            transport = self._transport
            if transport is not None:
                if transport.is_closing() or transport.get_write_buffer_size() <= server.outbound.pace_bytes:
                    return True
            elif self.queue.qsize() <= server.max_queued_packets // 2:
                return True
            if loop.time() > deadline:
                log.warning("socket %s takes no data; dropping it", self.sid)
                if transport is not None:
                    server.outbound.drop(self)
                else:
                    await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_ERROR)
                return False
            await asyncio.sleep(0.005)
        return False

    async def send(self, pkt: eio_packet.Packet) -> None:
        if self._transport is None:
            if self.queue.qsize() >= self.server.max_queued_packets:
                # A polling client that stopped polling (or an upgrade that stalls).
                log.warning("socket %s does not poll (%d packets queued); closing it", self.sid, self.queue.qsize())
                await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
                return
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
        # Stamped when it was due (not when the timer got round to it), so the timeout
        # counts from the announced interval.
        self.last_ping = stamp = time.time() - self.server.ping_due.late
        if not self.write_frame(PING_FRAME):  # polling: through the queue
            self._ping_task = asyncio.ensure_future(self._queue_ping())
        self.server.pong_due.add(self, stamp)

    async def _queue_ping(self) -> None:
        try:
            await self.send(eio_packet.Packet(eio_packet.PING))
        except eio_exceptions.SocketIsClosedError:
            pass  # closed since the ping was due

    def ping_overdue(self) -> bool:
        last_ping = self.last_ping
        return bool(last_ping) and time.time() - last_ping >= self.server.ping_timeout

    def pong_due(self, stamp: float) -> None:
        """The ping sent at ``stamp`` is unanswered after ``ping_timeout``: the client is gone."""
        if self.last_ping != stamp or self.closing or self.closed:
            return
        log.info("socket %s did not answer a ping; dropping it", self.sid)
        self._timed_out = True
        if self._transport is not None:
            self._transport.abort()  # the receive loop ends and closes the socket
        else:
            self.drop(self.server.reason.PING_TIMEOUT)

    def connect_due(self) -> None:
        """The connect timeout has passed: a session that never connected a namespace goes."""
        if self.joined or self.closing or self.closed:
            return
        log.debug("socket %s sent no Socket.IO CONNECT in time; closing it", self.sid)
        self.server.note_refused("connect_timeout")
        self.drop(self.server.reason.TRANSPORT_CLOSE)

    def joined_namespace(self) -> None:
        self.joined = True
        self.settle()

    def settle(self) -> None:
        """No longer a session waiting for its CONNECT: its address's count goes down."""
        address, self.pending_address = self.pending_address, None
        if address is not None:
            self.server.release_pending(address)

    def malformed(self, reason: str) -> None:
        self.server.note_malformed(reason, self.sid)
        self.drop(self.server.reason.TRANSPORT_ERROR)

    def drop(self, reason: Any) -> None:
        """Ends the session now. Live on its websocket: a close frame and the connection
        closed (the receive loop then closes the session). Polling or upgraded: the
        session is closed and its pending poll (or upgraded writer) ended."""
        if self._transport is not None:
            close_with_protocol_error(self._transport)
        elif not (self.closing or self.closed) and self._drop_task is None:
            self._drop_task = asyncio.ensure_future(self._drop_queued(reason))

    async def _drop_queued(self, reason: Any) -> None:
        await self.close(wait=False, abort=True, reason=reason)
        if self.server.sockets.get(self.sid) is self:
            del self.server.sockets[self.sid]

    async def handle_post_request(self, environ: dict) -> None:
        """A long-polling POST, decoded strictly (engineio's decoder turns JSON-looking
        payloads into objects and lets a parse error escape as a traceback)."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > self.server.max_http_buffer_size:
            self.server.note_malformed("too_large", self.sid)
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
            raise eio_exceptions.ContentTooLongError()
        body = await environ["wsgi.input"].read(length)
        try:
            packets = decode_payload(body)
            if any(pkt.packet_type == eio_packet.PING for pkt in packets):
                raise MalformedFrame("engineio")  # not from a v4 client outside an upgrade
        except MalformedFrame as exc:
            self.server.note_malformed(exc.reason, self.sid)
            # Closed here, without engineio's wait for a poll to fetch the CLOSE packet;
            # engineio then answers 400 and forgets the session.
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
            raise MalformedPayload() from None
        for pkt in packets:
            if self.closing or self.closed:
                break
            if pkt.packet_type != eio_packet.NOOP and pkt.packet_type != eio_packet.UPGRADE:
                await self.receive(pkt)

    async def close_transport(self) -> None:
        """Ends the connection without a CLOSE packet: clients take it as a transport
        close and reconnect (by themselves, possibly to another instance)."""
        if self._ws is not None:
            await self._ws.close()
        else:
            await self.queue.put(None)  # engineio's writer closes the websocket / ends the poll

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        self.settle()
        was_open = not (self.closing or self.closed)
        await super().close(wait=False, abort=abort, reason=reason)
        if wait and was_open and self._transport is None:
            # engineio waits for the queue to drain: forever if the client never polls.
            try:
                await asyncio.wait_for(self.queue.join(), self.server.ping_timeout)
            except asyncio.TimeoutError:
                pass
        if abort and was_open:
            # As the reference server: a pending poll is answered with a NOOP, and an
            # upgraded websocket's writer ends (direct sockets have no queue any more).
            self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))
            self.queue.put_nowait(None)

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
        try:
            while True:
                msg = await sock.receive()
                if msg.type is not WSMsgType.TEXT:
                    if msg.type is WSMsgType.BINARY:
                        self.malformed("binary")
                    elif msg.type is WSMsgType.ERROR:  # e.g. larger than maxPayload (aiohttp sent 1009)
                        self.server.note_malformed("websocket", self.sid)
                    break
                try:
                    pkt = decode_engineio(msg.data)
                except MalformedFrame as exc:
                    self.malformed(exc.reason)
                    break
                kind = pkt.packet_type
                if kind == eio_packet.PING:  # a v4 client answers pings, it does not send them
                    self.malformed("engineio")
                    break
                if kind == eio_packet.NOOP or kind == eio_packet.UPGRADE:
                    continue
                try:
                    await self.receive(pkt)
                except eio_exceptions.SocketIsClosedError:
                    break
                except Exception:  # noqa: BLE001 - a fault of ours, not the client's: log, keep it
                    log.exception("socket receive failed")
                if self.closed or transport.is_closing():
                    break
        except asyncio.CancelledError:
            pass
        finally:
            self.server.outbound.forget(self)
            self._transport = None
            self._ws = None
            if not sock.closed:
                try:
                    await sock.close()
                except Exception:  # noqa: BLE001 - the peer is gone already
                    pass
        reason = self.server.reason.PING_TIMEOUT if self._timed_out else self.server.reason.TRANSPORT_CLOSE
        await self.close(wait=False, abort=True, reason=reason)


class ClientErrorsAtDebug(logging.LoggerAdapter):
    """engineio's logger. What engineio logs at WARNING or ERROR without a traceback is
    what a client got wrong (unsupported version, unknown session, bad origin): debug
    level here. Its INFO lines trace every packet: dropped. Exceptions keep their level."""

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("exc_info"):
            super().log(level, msg, *args, **kwargs)
        elif level >= logging.WARNING:
            super().log(logging.DEBUG, msg, *args, **kwargs)


class DirectEngineServer(engineio.AsyncServer):
    """engineio's server, creating ``DirectSocket``s."""

    def __init__(
        self, *args: Any, max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        instance_max_buffered_bytes: int = DEFAULT_INSTANCE_MAX_BUFFERED_BYTES,
        ping_interval_ms: int = 25000, ping_timeout_ms: int = 20000, connect_timeout_ms: int = 45000,
        pending_per_address: int = 32, client_address: Callable[[web.Request], str] | None = None,
        on_malformed: Callable[[str], None] | None = None, on_refused: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, ping_interval=ping_interval_ms / 1000, ping_timeout=ping_timeout_ms / 1000, **kwargs)
        self.outbound = OutboundBudget(max_buffered_bytes, instance_max_buffered_bytes)
        # The polling queue's bound, in packets (most events are well under 1 KiB).
        self.max_queued_packets = max(64, max_buffered_bytes // 1024)
        # The handshake announces these exactly (engineio rounds the interval to seconds).
        self.ping_interval_ms = ping_interval_ms
        self.ping_timeout_ms = ping_timeout_ms
        self.pending_per_address = pending_per_address
        self.pending_by_address: dict[str, int] = {}
        self.client_address = client_address or (lambda request: request.remote or "unknown")
        self._on_malformed = on_malformed
        self._on_refused = on_refused
        self._async = {**self._async, "websocket": LeanWebSocket}
        # Ping, pong and connect deadlines of all sockets: three timers, not one per socket.
        self.ping_due = Deadlines(self.ping_interval, lambda sock, _: sock.ping_due())
        self.pong_due = Deadlines(self.ping_timeout, lambda sock, stamp: sock.pong_due(stamp))
        self.connect_due = Deadlines(connect_timeout_ms / 1000, lambda sock, _: sock.connect_due())

    def attach(self, app: web.Application, engineio_path: str = "engine.io") -> None:
        super().attach(app, engineio_path)
        # Other methods reach handle_request too: Engine.IO v4 answers them 400 (aiohttp: 405).
        app.router.add_route("*", f"/{engineio_path.strip('/')}/", self.handle_request)

    async def shutdown(self) -> None:
        """Stops the timers and engineio's service task; again is a no-op (engineio's own
        ``shutdown`` fails when called twice, and misses a service task not started yet)."""
        self.ping_due.cancel()
        self.pong_due.cancel()
        self.connect_due.cancel()
        self.outbound.cancel()
        service, self.service_task_handle = self.service_task_handle, None
        await cancel_and_wait(service)  # engineio's loop ends on cancellation

    def note_malformed(self, reason: str, sid: str | None) -> None:
        # Debug level: a client can send these at will, before authenticating.
        log.debug("socket %s: malformed frame (%s); closing the connection", sid, reason)
        if self._on_malformed is not None:
            self._on_malformed(reason)

    def note_refused(self, reason: str) -> None:
        if self._on_refused is not None:
            self._on_refused(reason)

    def release_pending(self, address: str) -> None:
        left = self.pending_by_address.get(address, 0) - 1
        if left > 0:
            self.pending_by_address[address] = left
        else:
            self.pending_by_address.pop(address, None)

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        """What engineio answers otherwise (a 405, a missing transport taken as polling,
        an HTTP request or a 400 for a session that went away or was upgraded), answered
        as Engine.IO v4 does; the rest is engineio's."""
        query = request.query
        transport = query.get("transport")
        if request.method not in ("GET", "POST", "OPTIONS") or transport not in self.transports:
            return web.Response(status=400, text='"Bad Request"', content_type="text/plain")
        sid = query.get("sid")
        sock = self.sockets.get(sid) if sid is not None else None
        if sock is not None and sock.closed:
            # Closed but not yet forgotten (engineio's POST path would raise KeyError).
            del self.sockets[sid]
            return web.Response(status=400, text='"Session is closed"', content_type="text/plain")
        if isinstance(sock, DirectSocket):
            if sock.ping_overdue() and not sock.direct:
                # Its pong deadline has passed (the timer may not have run yet).
                sock.drop(self.reason.PING_TIMEOUT)
                return web.Response(status=400, text='"Session timed out"', content_type="text/plain")
            if (sock.upgraded and transport == "websocket" and request.method == "GET"
                    and request.headers.get("Upgrade", "").lower() == "websocket"):
                # A second websocket for an upgraded session: accepted and closed at once.
                ws = web.WebSocketResponse(compress=False, timeout=2.0)
                await ws.prepare(request)
                await ws.close()
                return ws
        return await super().handle_request(request)

    async def _handle_connect(self, environ, transport, jsonp_index=None):
        """engineio 4's ``_handle_connect``, creating a ``DirectSocket`` (engineio names
        its socket class inside this method, so it is repeated here)."""
        if self.start_service_task:
            self.start_service_task = False
            self.service_task_handle = self.start_background_task(self._service_task)

        # Pulse: sessions without a CONNECT yet are bounded per client address.
        address = self.client_address(environ["aiohttp.request"])
        pending = self.pending_by_address.get(address, 0)
        if pending >= self.pending_per_address:
            self.note_refused("pending_per_address")
            return TOO_MANY_PENDING
        self.pending_by_address[address] = pending + 1

        sid = self.generate_id()
        s = DirectSocket(self, sid)
        s.pending_address = address
        self.sockets[sid] = s

        # Not held in a local: this frame lives as long as the websocket does.
        # Pulse: the configured milliseconds, exactly.
        await s.send(eio_packet.Packet(eio_packet.OPEN, {
            "sid": sid,
            "upgrades": self._upgrades(sid, transport),
            "pingTimeout": self.ping_timeout_ms,
            "pingInterval": self.ping_interval_ms,
            "maxPayload": self.max_http_buffer_size,
        }))

        ret = await self._trigger_event("connect", sid, environ, run_async=False)
        if ret is not None and ret is not True:
            del self.sockets[sid]
            s.settle()
            self.logger.warning("Application rejected connection")
            return self._unauthorized(ret or None)

        s.schedule_ping()
        self.connect_due.add(s)  # Pulse: closed unless it connects a namespace in time

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
    """python-socketio's server on ``DirectEngineServer``, decoding client packets
    strictly (realtime/protocol.py) and answering as the Socket.IO v5 reference does,
    with a bound on the handlers each socket has running (``max_inflight_events``) and
    waiting, in order, for one of those to finish (``max_queued_events``); an event
    beyond both is refused."""


    def __init__(self, *args: Any, max_inflight_events: int = 8, max_queued_events: int = 32,
                 busy_ack: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_inflight_events = max(1, max_inflight_events)
        self.max_queued_events = max(0, max_queued_events)
        self.busy_ack = busy_ack
        self.inflight: dict[str, int] = {}  # eio sid -> handlers running
        self.waiting: dict[str, collections.deque] = {}  # eio sid -> (namespace, id, data) in order
        self._handlers: set[asyncio.Task] = set()  # referenced until done

    def _engineio_server_class(self):
        return DirectEngineServer

    def _reject(self, eio_sid: str, reason: str) -> None:
        sock = self.eio.sockets.get(eio_sid)
        if isinstance(sock, DirectSocket):
            sock.malformed(reason)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        """python-socketio's dispatch, on a strictly decoded packet. As the reference
        server, a packet for a namespace the session has not joined (or a second CONNECT
        to one it has) closes the connection."""
        try:
            pkt = parse_socketio(data)
        except MalformedFrame as exc:
            self._reject(eio_sid, exc.reason)
            return
        joined = self.manager.sid_from_eio_sid(eio_sid, pkt.namespace) is not None
        if (pkt.kind == CONNECT) == joined:
            self._reject(eio_sid, "state")
            return
        if pkt.kind == CONNECT:
            await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif pkt.kind == DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
        elif pkt.kind == EVENT:
            await self._handle_event(eio_sid, pkt.namespace, pkt.ack_id, pkt.data)
        elif pkt.kind == ACK:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.ack_id, pkt.data)

    def _namespace_served(self, namespace: str) -> bool:
        # python-socketio's own test in _handle_connect.
        return (namespace in self.handlers or namespace in self.namespace_handlers
                or self.namespaces == "*" or namespace in self.namespaces)

    async def _handle_connect(self, eio_sid: str, namespace: str, data: Any) -> None:
        if not self._namespace_served(namespace):
            # The reference server's answer (python-socketio says "Unable to connect").
            await self._send_packet(eio_sid, self.packet_class(
                sio_packet.CONNECT_ERROR, data={"message": "Invalid namespace"}, namespace=namespace))
            return
        await super()._handle_connect(eio_sid, namespace, data)
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is not None and self.manager.is_connected(sid, namespace):
            sock = self.eio.sockets.get(eio_sid)
            if isinstance(sock, DirectSocket):
                sock.joined_namespace()

    async def _handle_event(self, eio_sid, namespace, id, data):
        if self.inflight.get(eio_sid, 0) < self.max_inflight_events:
            self._start(eio_sid, namespace, id, data)
            return
        waiting = self.waiting.setdefault(eio_sid, collections.deque())
        if len(waiting) < self.max_queued_events:
            waiting.append((namespace, id, data))
            return
        if id is not None:
            await self._send_packet(eio_sid, self.packet_class(
                sio_packet.ACK, namespace=namespace or "/", id=id, data=[self.busy_ack]))

    def _start(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> bool:
        # As python-socketio's own _handle_event (async_handlers), with the task counted.
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if not self.manager.is_connected(sid, namespace):
            return False
        self.inflight[eio_sid] = self.inflight.get(eio_sid, 0) + 1
        task = asyncio.ensure_future(self._handle_event_internal(self, sid, eio_sid, data, namespace, id))
        self._handlers.add(task)
        task.add_done_callback(lambda t: self._done(eio_sid, t))
        return True

    def _done(self, eio_sid: str, task: asyncio.Task) -> None:
        self._handlers.discard(task)
        running = self.inflight.get(eio_sid, 1) - 1
        if running > 0:
            self.inflight[eio_sid] = running
        else:
            self.inflight.pop(eio_sid, None)
        waiting = self.waiting.get(eio_sid)
        while waiting:
            if self._start(eio_sid, *waiting.popleft()):
                break
            waiting.clear()  # the socket is gone: drop the rest
        if waiting is not None and not waiting:
            self.waiting.pop(eio_sid, None)
