"""The Socket.IO server: connections, client events with acks, delivery and resume.

Delivery: the fan-out listener hands over each event once; its packet is encoded once
(per recipient user when it carries that user's offset) and written to each of the
user's sockets here, in the order the channel delivered them.

Limits (API.md v1.1 "Real-time lifecycle and limits"): at most ``sockets_per_user``
sockets per user across instances (``SocketCap``); every client event is rate limited
per user across sockets and instances (``RateLimits.check_socket_event``); at most
``socket_max_inflight_events`` handlers per socket run at once and
``socket_max_queued_events`` wait (``DirectSocketServer``: one more is refused with a
429 ack); unsent data per socket and per instance is bounded (``OutboundBudget``: a
socket over it is dropped and resumes from its offset).

Revocation: logout, logout-all and erasure push a disconnect through the fan-out (the
fast path), and every ``socket_session_check_seconds`` each instance re-checks the
sessions of its sockets (one cache read, PostgreSQL for the misses), which also covers
expiry and a disconnect lost while the listener resubscribed.

Resume: a socket starts "held": events for it are queued until its start-up is done
(replay after ``auth.offset``, or just noting where the user's log stands), then the
queue is flushed, skipping what the replay already sent. So a client sees what it
missed, in order, before anything new.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import orjson
import socketio
from aiohttp import web
from engineio import packet as eio_packet
from pydantic import BaseModel, ValidationError

from kernel.errors import DomainError, RateLimited, StoreUnavailable, Unauthorized
from kernel.settings import Settings
from realtime.fanout import FanoutListener, FanoutMessage
from realtime.models import MessageRead, MessageSend, PresenceQuery, Typing
from realtime.packets import OrjsonCodec, event_packet, event_packet_from
from realtime.presence import InstancePresence
from realtime.socket_cap import SocketCap
from realtime.transport import ClientErrorsAtDebug, DirectSocket, DirectSocketServer, packet_frame
from server.metrics import Metrics
from server.services import Services
from server.services.ports import CONVERSATIONS_CHANGED, DISCONNECT_SESSIONS, DISCONNECT_USER
from storage.redis.client import RedisUnavailable
from storage.redis.offset_log import OffsetLogStore, parse_offset

log = logging.getLogger("pulse.realtime")

NAMESPACE = "/"
# Revoked sessions are looked up this many at a time.
SESSION_CHECK_BATCH = 1000
Held = list[tuple[str | None, eio_packet.Packet]]


@dataclass(slots=True)
class SocketState:
    user_id: str
    eio_sid: str
    # The session the socket was authenticated with (revocation closes the socket).
    token_hash: bytes
    # The engineio socket (None if it went away during the connect handler).
    eio_socket: DirectSocket | None = None
    # Events waiting while the socket starts up or catches up; None once live.
    held: Held | None = field(default_factory=list)
    # Newest offset this socket has been sent (or, at start, where it stands).
    last_offset: str | None = None
    starter: asyncio.Task | None = None
    # The socket's latest ``message:send`` until it reaches the messaging service: the next
    # one waits for it there, so a socket's sends keep their order.
    send_turn: asyncio.Future | None = None


def _after(offset: str, than: str | None) -> bool:
    if than is None:
        return True
    a, b = parse_offset(offset), parse_offset(than)
    return a is None or b is None or a > b


class RealtimeServer:
    """Built and attached to the app by ``create_app``; then given its Redis transport
    (``start``) and the services its handlers call (``serve``) as they come up.
    ``client_address``: the caller's address as the REST front door sees it (the same
    proxy rules)."""

    def __init__(self, settings: Settings, metrics: Metrics, *,
                 client_address: Callable[[web.Request], str]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sio = DirectSocketServer(
            async_mode="aiohttp", json=OrjsonCodec, logger=False,
            engineio_logger=ClientErrorsAtDebug(logging.getLogger("pulse.realtime.engineio"), {}),
            max_http_buffer_size=settings.socket_max_payload_bytes,
            ping_interval_ms=settings.socket_ping_interval_ms, ping_timeout_ms=settings.socket_ping_timeout_ms,
            connect_timeout_ms=settings.socket_connect_timeout_ms,
            pending_per_address=settings.socket_pending_per_address,
            client_address=client_address,
            on_malformed=lambda reason: metrics.socket_malformed_frames.labels(reason).inc(),
            on_refused=lambda reason: metrics.socket_sessions_refused.labels(reason).inc(),
            max_buffered_bytes=settings.socket_max_buffered_bytes,
            instance_max_buffered_bytes=settings.instance_max_buffered_bytes,
            max_inflight_events=settings.socket_max_inflight_events,
            max_queued_events=settings.socket_max_queued_events,
            busy_ack=_error(429, "Too Many Requests", "Too many events in flight on this socket; wait for their acks."),
        )
        self.sockets: dict[str, SocketState] = {}
        # A tuple, not a set: one socket per user is the common case (a set is ~200 bytes).
        self.sockets_by_user: dict[str, tuple[str, ...]] = {}
        # Set by ``start`` and ``serve``, once the stores and the services are up.
        self.services: Services | None = None
        self.offset_log: OffsetLogStore | None = None
        self.presence: InstancePresence | None = None
        self.listener: FanoutListener | None = None
        self.cap: SocketCap | None = None
        self._catch_up: asyncio.Task | None = None
        self._session_checks: asyncio.Task | None = None
        self._register_handlers()

    def attach(self, app: web.Application) -> None:
        """Serves Socket.IO at /socket.io on ``app``."""
        self.sio.attach(app, socketio_path="socket.io")

    def start(self, offset_log: OffsetLogStore, presence: InstancePresence, listener: FanoutListener,
              cap: SocketCap) -> None:
        """The Redis transport (realtime_ctx: before the services, which push through it)."""
        self.offset_log = offset_log
        self.presence = presence
        self.listener = listener
        self.cap = cap

    def serve(self, services: Services) -> None:
        """The services the handlers call (sockets_ctx, once they exist); sessions are
        re-checked from now on."""
        self.services = services
        self._session_checks = asyncio.create_task(self._check_sessions_periodically(),
                                                   name="pulse-realtime-session-checks")

    # --- connections -----------------------------------------------------------------

    def _register_handlers(self) -> None:
        sio = self.sio
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        sio.on("message:send", self._ack_handler("message:send", MessageSend, self.message_send, recheck=True,
                                                 ordered=True))
        sio.on("message:read", self._ack_handler("message:read", MessageRead, self.message_read))
        sio.on("typing", self._ack_handler("typing", Typing, self.typing, recheck=True))
        sio.on("presence:query", self._ack_handler("presence:query", PresenceQuery, self.presence_query))

    async def on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        auth = auth if isinstance(auth, dict) else {}
        token = auth.get("token")
        try:
            principal = await self.services.users.authenticate(token if isinstance(token, str) else None)
        except Unauthorized:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        except DomainError as exc:  # e.g. PostgreSQL unavailable: the client retries later
            raise socketio.exceptions.ConnectionRefusedError(exc.title)
        user_id = principal.user_id
        if not await self.cap.claim(user_id, sid):
            raise socketio.exceptions.ConnectionRefusedError("too_many_sockets")
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        state = SocketState(user_id=user_id, eio_sid=eio_sid, token_hash=principal.token_hash,
                            eio_socket=self.sio.eio.sockets.get(eio_sid))
        self.sockets[sid] = state
        self.sockets_by_user[user_id] = (*self.sockets_by_user.get(user_id, ()), sid)
        self.metrics.socket_connections.inc()
        await self.presence.socket_opened(user_id)
        offset = auth.get("offset")
        if offset is None:
            # Where the user's log stands, read before the client learns it is connected:
            # anything appended later reaches this (held) socket and is flushed on release;
            # read after the CONNECT, an event pushed meanwhile would count as already sent.
            try:
                state.last_offset = await self.offset_log.last_offset(user_id)
            except RedisUnavailable as exc:
                log.warning("offset log unavailable at connect (%s)", exc)
        # Runs once the handshake completes (the CONNECT packet must precede replayed events).
        state.starter = asyncio.create_task(self._start_socket(sid, state, offset))

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        state = self.sockets.pop(sid, None)
        if state is None:
            return
        if state.starter is not None and not state.starter.done():
            state.starter.cancel()
        sids = tuple(s for s in self.sockets_by_user.get(state.user_id, ()) if s != sid)
        if sids:
            self.sockets_by_user[state.user_id] = sids
        else:
            self.sockets_by_user.pop(state.user_id, None)
        self.metrics.socket_connections.dec()
        await self.cap.release(state.user_id, sid)
        await self.presence.socket_closed(state.user_id)

    async def _start_socket(self, sid: str, state: SocketState, offset: Any) -> None:
        try:
            await self._start_socket_steps(sid, state, offset)
        finally:
            state.starter = None  # a finished task kept per socket is ~300 bytes for nothing

    async def _start_socket_steps(self, sid: str, state: SocketState, offset: Any) -> None:
        for _ in range(200):  # the handshake is normally done at the first check
            if self.sio.manager.is_connected(sid, NAMESPACE) or sid not in self.sockets:
                break
            await asyncio.sleep(0.01)
        if state.eio_sid not in self.sio.eio.sockets:
            # The client left while the connect handler ran: python-socketio drops
            # that disconnect (the socket was not connected yet), so clean up here.
            await self.on_disconnect(sid)
            await self.sio.manager.disconnect(sid, NAMESPACE, ignore_queue=True)
            return
        if offset is None:
            await self._release(state)
        elif parse_offset(offset) is None:
            await self._resync(state, "invalid_offset")
        else:
            await self._replay(state, offset)

    async def _replay(self, state: SocketState, offset: str, *, paced: bool = True) -> None:
        """Sends what the log holds after ``offset`` (the socket must be held), then releases it.
        ``paced``: waits for the client to take the data as it goes (a socket's own start-up);
        not in the catch-up of every socket, where a slow one would delay the others (there
        a socket over its budget is dropped, reconnects and replays paced)."""
        for attempt in range(3):
            try:
                entries = await self.offset_log.read_after(state.user_id, offset)
                break
            except RedisUnavailable as exc:
                # Right after a Redis restart, pooled connections fail once each.
                if attempt == 2:
                    log.warning("offset log unavailable for a replay (%s)", exc)
                    await self._resync(state, "log_unavailable")
                    return
                await asyncio.sleep(0.2 * (attempt + 1))
        if entries is None:
            await self._resync(state, "offset_too_old")
            return
        state.last_offset = offset
        for entry in entries:
            await self._send(state, event_packet(entry.event, entry.data_json, entry.offset))
            state.last_offset = entry.offset
            if paced and not await self._drained(state):
                return  # dropped: its disconnect cleans up
        await self._release(state, paced=paced)

    async def _resync(self, state: SocketState, reason: str, *, paced: bool = True) -> None:
        state.last_offset = None
        await self._send(state, event_packet_from("resync", {"reason": reason}))
        await self._release(state, paced=paced)

    async def _release(self, state: SocketState, *, paced: bool = True) -> None:
        """Flushes the held events (skipping those the replay sent) and goes live."""
        while state.held:
            batch, state.held = state.held, []
            for offset, pkt in batch:
                if offset is not None and not _after(offset, state.last_offset):
                    continue
                await self._send(state, pkt)
                if offset is not None:
                    state.last_offset = offset
                if paced and not await self._drained(state):
                    return
        state.held = None

    async def _drained(self, state: SocketState) -> bool:
        sock = state.eio_socket if state.eio_socket is not None else self.sio.eio.sockets.get(state.eio_sid)
        return not isinstance(sock, DirectSocket) or await sock.drained()

    def _drop_slow(self, state: SocketState) -> None:
        """Closes the connection (not a DISCONNECT packet): the client reconnects and
        resumes from its offset."""
        sock = state.eio_socket if state.eio_socket is not None else self.sio.eio.sockets.get(state.eio_sid)
        if isinstance(sock, DirectSocket) and sock.direct:
            self.sio.eio.outbound.drop(sock)
        elif sock is not None:
            asyncio.ensure_future(sock.close_transport())

    async def _send(self, state: SocketState, pkt: eio_packet.Packet, frame: bytes | None = None) -> None:
        """One packet to one socket: written straight to its websocket when it is live
        there (``frame``: the packet already framed, shared by many recipients), else
        through engineio (long-polling, upgrades)."""
        sock = state.eio_socket
        if sock is not None and sock.write_frame(frame if frame is not None else packet_frame(pkt)):
            return
        await self.sio.eio.send_packet(state.eio_sid, pkt)

    # --- delivery ----------------------------------------------------------------------

    async def deliver(self, message: FanoutMessage) -> None:
        """One event from the fan-out channel to this instance's sockets of its recipients."""
        if message.event == DISCONNECT_USER:
            await self._disconnect_users(message.user_ids)
            return
        if message.event == DISCONNECT_SESSIONS:
            await self._disconnect_sessions(message.user_ids, message.data_json)
            return
        if message.event == CONVERSATIONS_CHANGED:
            self._forget_conversations(message.data_json)
            return
        # Encoded and framed once per event (once per recipient user when it carries
        # that user's offset), then the same bytes go to each socket.
        shared: tuple[eio_packet.Packet, bytes] | None = None
        sockets = 0
        for user_id in message.user_ids:
            sids = self.sockets_by_user.get(user_id)
            if not sids:
                continue
            offset = message.offsets[user_id] if message.offsets is not None else None
            if offset is not None:
                pkt = event_packet(message.event, message.data_json, offset)
                frame = packet_frame(pkt)
            else:
                if shared is None:
                    pkt = event_packet(message.event, message.data_json)
                    shared = (pkt, packet_frame(pkt))
                pkt, frame = shared
            for sid in sids:
                state = self.sockets.get(sid)
                if state is None:
                    continue
                sockets += 1
                if state.held is not None:
                    if len(state.held) >= self.settings.offset_log_max_events:
                        # Catching up for too long: what is held would only grow.
                        log.warning("socket %s fell too far behind while catching up; dropping it", sid)
                        state.held = []
                        self._drop_slow(state)
                        continue
                    state.held.append((offset, pkt))
                    continue
                await self._send(state, pkt, frame)
                if offset is not None:
                    state.last_offset = offset
        if sockets:
            self.metrics.socket_deliveries.labels(message.event).inc(sockets)

    async def _disconnect_users(self, user_ids: list[str]) -> None:
        """Their sessions are gone: a DISCONNECT packet tells clients not to reconnect."""
        for user_id in user_ids:
            for sid in self.sockets_by_user.get(user_id, ()):
                await self._disconnect(sid)

    async def _disconnect_sessions(self, user_ids: list[str], data_json: bytes) -> None:
        try:
            revoked = {bytes.fromhex(h) for h in orjson.loads(data_json)["token_hashes"]}
        except (ValueError, KeyError, TypeError):
            log.error("fan-out: dropped a malformed session disconnect")
            return
        for user_id in user_ids:
            for sid in self.sockets_by_user.get(user_id, ()):
                state = self.sockets.get(sid)
                if state is not None and state.token_hash in revoked:
                    await self._disconnect(sid)

    def _forget_conversations(self, data_json: bytes) -> None:
        try:
            ids = [str(i) for i in orjson.loads(data_json)["conversation_ids"]]
        except (ValueError, KeyError, TypeError):
            log.error("fan-out: dropped a malformed conversations-changed message")
            return
        if self.services is not None:
            self.services.messaging.forget_conversations(ids)

    async def _disconnect(self, sid: str) -> None:
        try:
            await self.sio.disconnect(sid)
        except Exception:  # noqa: BLE001 - a socket that is already gone
            pass
        await self.on_disconnect(sid)

    async def _check_sessions_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.socket_session_check_seconds)
            try:
                await self.check_sessions()
            except StoreUnavailable as exc:  # keep the sockets, check again later
                log.warning("socket session check skipped (%s)", exc.detail)
            except Exception:  # noqa: BLE001 - the check must outlive any single failure
                log.exception("socket session check failed")

    async def check_sessions(self) -> None:
        """Disconnects this instance's sockets whose session is no longer live (logged out,
        expired, its user erased)."""
        sids_by_session: dict[bytes, list[str]] = {}
        for sid, state in self.sockets.items():
            sids_by_session.setdefault(state.token_hash, []).append(sid)
        sessions = list(sids_by_session)
        users = self.services.users
        for start in range(0, len(sessions), SESSION_CHECK_BATCH):
            batch = sessions[start:start + SESSION_CHECK_BATCH]
            live = await users.live_sessions(batch)
            for token_hash in batch:
                if token_hash not in live:
                    for sid in sids_by_session[token_hash]:
                        await self._disconnect(sid)

    async def catch_up(self) -> None:
        """After the fan-out subscription was interrupted: every live socket is held
        now and catches up from the log (in one background task, not one per socket)."""
        if self.services is not None:
            # Changes announced meanwhile were missed too (the cache would not trust its
            # entries any more anyway: they belong to the lost subscription).
            self.services.messaging.forget_all_conversations()
        for state in self.sockets.values():
            if state.held is None:
                state.held = []
        if self._catch_up is None or self._catch_up.done():
            self._catch_up = asyncio.create_task(self._catch_up_all(), name="pulse-realtime-catch-up")

    async def _catch_up_all(self) -> None:
        for sid, state in list(self.sockets.items()):
            if sid not in self.sockets or state.held is None:
                continue
            if state.starter is not None and not state.starter.done():
                continue  # still starting: its own start-up releases it
            if state.last_offset is None:
                await self._resync(state, "events_missed", paced=False)
            else:
                await self._replay(state, state.last_offset, paced=False)

    async def disconnect_all(self) -> None:
        """Closes every socket at the transport level, so clients reconnect (to
        another instance) by themselves."""
        if self._catch_up is not None:
            self._catch_up.cancel()
        if self._session_checks is not None:
            self._session_checks.cancel()
        # Not sio.disconnect / eio.disconnect: those send a DISCONNECT or CLOSE packet,
        # which clients take as "stay away" and do not reconnect. Closing the WebSocket
        # itself is a transport close, after which clients reconnect.
        # Every Engine.IO session, not only those with a Socket.IO connection: one that has
        # not connected a namespace yet (or has left it) would otherwise keep its request
        # open, and aiohttp's shutdown waiting for it, until its client went away.
        closes = [asyncio.ensure_future(sock.close_transport()) for sock in list(self.sio.eio.sockets.values())
                  if isinstance(sock, DirectSocket) and not sock.closed]
        if closes:  # each waits for its client's close frame; bounded as a whole
            await asyncio.wait(closes, timeout=2.0)
        deadline = asyncio.get_running_loop().time() + 2.0
        while self.sockets and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for sid in list(self.sockets):  # polling clients, or closes that did not complete
            try:
                await self.sio.disconnect(sid)
            except Exception:  # noqa: BLE001 - a socket that is already gone
                pass
            await self.on_disconnect(sid)
        await self.sio.eio.shutdown()  # its timers and engineio's service task

    # --- client events -------------------------------------------------------------------

    def _ack_handler(
        self, event: str, model: type[BaseModel],
        handler: Callable[[str, SocketState, Any], Awaitable[dict[str, Any]]], *, recheck: bool = False,
        ordered: bool = False,
    ) -> Callable[[str, Any], Awaitable[dict[str, Any]]]:
        """``recheck``: the socket's session must still be live (the account active) for
        the event to run; if not, the socket is disconnected. ``ordered``: the socket's
        events reach ``handler`` in the order they came, whatever the checks before took
        (the handler must take its place synchronously, before its first wait)."""
        async def handle(sid: str, data: Any = None) -> dict[str, Any]:
            state = self.sockets.get(sid)
            if state is None:
                return _error(401, "Unauthorized", "Not connected.")
            try:
                payload = model.model_validate(data)
            except ValidationError as exc:
                return _error(400, "Bad Request", _describe(exc))
            services = self.services
            previous = turn = None
            if ordered:
                previous, turn = state.send_turn, asyncio.get_running_loop().create_future()
                state.send_turn = turn
            try:
                limited = services.rate_limits.check_socket_event(event, state.user_id)
                if recheck:  # both Redis round trips at once: one's latency, not two
                    _, live = await asyncio.gather(limited, services.users.live_sessions([state.token_hash]))
                    if not live:
                        asyncio.ensure_future(self._disconnect(sid))  # after this ack
                        return _error(401, "Unauthorized", "The session has ended.")
                else:
                    await limited
                if turn is not None:
                    if previous is not None and not previous.done():
                        await asyncio.wait([previous])  # not cancelled with this handler
                    # The next event resumes only once this handler waits: after it took its place.
                    turn.set_result(None)
                return await handler(sid, state, payload)
            except RateLimited as exc:
                return {**_error(exc.status, exc.title, exc.detail), "retry_after": exc.retry_after}
            except DomainError as exc:  # a store down too (StoreUnavailable): 503, as over REST
                return _error(exc.status, exc.title, exc.detail)
            except Exception:  # noqa: BLE001 - one bad event must not drop the socket
                log.exception("socket event failed")
                return _error(500, "Internal Server Error", "Internal Server Error")
            finally:
                if turn is not None:
                    if not turn.done():
                        turn.set_result(None)
                    if state.send_turn is turn:
                        state.send_turn = None

        return handle

    async def message_send(self, sid: str, state: SocketState, p: MessageSend) -> dict[str, Any]:
        message, _created = await self.services.messaging.send_message(
            state.user_id, p.conversation_id, p.body, p.client_id,
        )
        return {"ok": True, "message": message}

    async def message_read(self, sid: str, state: SocketState, p: MessageRead) -> dict[str, Any]:
        await self.services.messaging.mark_read(state.user_id, p.conversation_id, p.message_id)
        return {"ok": True}

    async def typing(self, sid: str, state: SocketState, p: Typing) -> dict[str, Any]:
        await self.services.messaging.typing(state.user_id, p.conversation_id, p.typing)
        return {"ok": True}

    async def presence_query(self, sid: str, state: SocketState, p: PresenceQuery) -> dict[str, Any]:
        return {"ok": True, "online": await self.services.presence.online_for(state.user_id, p.user_ids)}


def _error(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"ok": False, "error": {"status": status, "title": title, "detail": detail}}


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "payload"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "The payload is not valid."
