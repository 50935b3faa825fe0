"""One simulated person on a socket: logs in over REST, connects, chats, listens.

Runs entirely on the asyncio thread of :mod:`loadtest.aio`; every measurement goes
through ``bridge.record`` so that locust sees it as a request of type ``socketio``
(or the HTTP method for the few REST calls made from here).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Callable

import aiohttp

from loadtest.seeddata import API
from loadtest.sioclient import ConnectRefused, SocketIOClient

SOCKETIO = "socketio"
CHAT_DELIVERY = "chat delivery"
SEND_ACK = "message:send ack"
CONNECT = "connect"
FANOUT_DELIVERY = "notification fan-out"
CHAT_MARK = "lt|"


def chat_body(sender_index: int, sent_at: float | None = None) -> str:
    """Message text carrying its send time (wall clock, same machine) and its sender."""
    sent_at = time.time() if sent_at is None else sent_at
    return f"{CHAT_MARK}{sent_at:.6f}|{sender_index}|load test message"


def parse_chat_body(body: str) -> tuple[float, int] | None:
    if not isinstance(body, str) or not body.startswith(CHAT_MARK):
        return None
    try:
        _, sent_at, sender, _rest = body.split("|", 3)
        return float(sent_at), int(sender)
    except ValueError:
        return None


class RealtimeSession:
    def __init__(self, bridge, *, base_url: str, login: str, password: str, index: int,
                 on_notification: Callable[[dict, float], None] | None = None,
                 token: str | None = None):
        self.bridge = bridge
        self.base_url = base_url.rstrip("/")
        self.login = login
        self.password = password
        self.index = index
        self.on_notification = on_notification
        self.token: str | None = token
        self.user_id: str | None = None
        self.client: SocketIOClient | None = None
        self.last_offset: str | None = None
        self.received = 0

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    async def rest(self, method: str, path: str, name: str, *, json=None,
                   ok=(200, 201, 204)) -> dict | None:
        """One REST call, measured under ``name`` like locust's own HTTP users."""
        started = time.perf_counter()
        exc: BaseException | None = None
        body: dict | None = None
        length = 0
        try:
            async with self.bridge.session.request(method, self.base_url + path, json=json,
                                                   headers=self.headers if self.token else None
                                                   ) as response:
                raw = await response.read()
                length = len(raw)
                if response.status not in ok:
                    exc = RuntimeError(f"HTTP {response.status}: {raw[:200]!r}")
                elif raw and response.content_type.endswith("json"):
                    body = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            exc = error
        self.bridge.record(method, name, (time.perf_counter() - started) * 1000, length, exc)
        return body if exc is None else None

    async def start(self) -> None:
        if self.token:
            await self.connect()
            return
        answer = await self.rest("POST", f"{API}/auth/login", f"{API}/auth/login",
                                 json={"login": self.login, "password": self.password},
                                 ok=(200,))
        if not answer:
            raise ConnectionError(f"login failed for {self.login}")
        self.token = answer["token"]
        self.user_id = answer["user"]["id"]
        await self.connect()

    async def connect(self) -> None:
        auth = {"token": self.token}
        if self.last_offset is not None:
            auth["offset"] = self.last_offset
        client = SocketIOClient(self.base_url, session=self.bridge.session, auth=auth,
                                on_event=self._on_event)
        started = time.perf_counter()
        try:
            await client.connect(timeout=15)
        except (ConnectRefused, ConnectionError, aiohttp.ClientError, asyncio.TimeoutError,
                OSError) as exc:
            self.bridge.record(SOCKETIO, CONNECT, (time.perf_counter() - started) * 1000, 0, exc)
            raise
        self.bridge.record(SOCKETIO, CONNECT, (time.perf_counter() - started) * 1000)
        self.client = client

    async def ensure_connected(self) -> bool:
        if self.client is not None and self.client.connected:
            return True
        try:
            await self.connect()
            return True
        except Exception:
            return False

    async def send_chat(self, conversation_id: str) -> None:
        if not await self.ensure_connected():
            return
        started = time.perf_counter()
        exc: BaseException | None = None
        try:
            ack = await self.client.call("message:send", {
                "conversation_id": conversation_id,
                "body": chat_body(self.index),
                "client_id": uuid.uuid4().hex,
            }, timeout=10)
            if not isinstance(ack, dict) or not ack.get("ok"):
                exc = RuntimeError(f"message:send refused: {ack!r}")
        except (ConnectionError, asyncio.TimeoutError) as error:
            exc = error
        self.bridge.record(SOCKETIO, SEND_ACK, (time.perf_counter() - started) * 1000, 0, exc)

    def _on_event(self, name: str, data) -> None:
        now = time.time()
        self.received += 1
        if isinstance(data, dict) and data.get("offset") is not None:
            self.last_offset = str(data["offset"])
        if name == "message:new":
            message = data.get("message") if isinstance(data, dict) else None
            parsed = parse_chat_body(message.get("body")) if isinstance(message, dict) else None
            # The sender's own echo is not a delivery to someone else.
            if parsed is not None and parsed[1] != self.index:
                self.bridge.record(SOCKETIO, CHAT_DELIVERY, max(0.0, (now - parsed[0]) * 1000))
        elif name == "notification:new" and self.on_notification is not None:
            notification = data.get("notification") if isinstance(data, dict) else None
            if isinstance(notification, dict):
                self.on_notification(notification, now)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
