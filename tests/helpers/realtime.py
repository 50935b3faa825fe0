"""Real-time test helpers: a recording Socket.IO client, app instances in this process and
as `pulse serve` subprocesses on the session's stores, and a REST client whose users'
welcome notifications are out of the way."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from kernel.settings import Settings
from server import appkeys
from storage.embedded.processes import free_port, stop_process, wait_for_port
from storage.redis.offset_log import START_OF_LOG
from tests.helpers.api import Account, Api
from tests.helpers.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
NO_AUTH = object()


class SocketClient:
    """A python-socketio client that records every event it receives, in order."""

    def __init__(self, *, reconnection: bool = False) -> None:
        self.sio = socketio.AsyncClient(reconnection=reconnection, reconnection_delay=0.2,
                                        reconnection_delay_max=0.5)
        self.received: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.connects = 0
        self.disconnects = 0
        self.connect_errors: list[Any] = []

        @self.sio.on("*")
        async def any_event(event: str, data: Any = None) -> None:
            await self.received.put((event, data))

        @self.sio.event
        async def connect_error(data: Any = None) -> None:
            self.connect_errors.append(data)

        @self.sio.event
        async def connect() -> None:
            self.connects += 1

        @self.sio.event
        async def disconnect(reason: Any = None) -> None:
            self.disconnects += 1

    async def connect(self, url: str, token: str | None, offset: str | None = None, *, raw_auth: Any = NO_AUTH,
                      **auth_extra: Any) -> "SocketClient":
        auth: Any = dict(auth_extra)
        if token is not None:
            auth["token"] = token
        if offset is not None:
            auth["offset"] = offset
        if raw_auth is not NO_AUTH:
            auth = raw_auth  # sent as given (None: no auth at all)
        await self.sio.connect(url, auth=auth, socketio_path="socket.io", transports=["websocket"], wait_timeout=10)
        return self

    async def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def next_event(self, name: str, timeout: float = 10.0) -> Any:
        """The data of the next ``name`` event, skipping others (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            event, data = await self.next(max(0.01, deadline - time.monotonic()))
            if event == name:
                return data

    async def call(self, event: str, data: Any = None, timeout: float = 10.0) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
        await self.sio.shutdown()


@dataclass
class Instance:
    """An app instance in this process: its URL and the app (for its Pusher)."""

    url: str
    app: Any

    @property
    def pusher(self):
        return self.app[appkeys.PUSHER]

    @property
    def realtime(self):
        return self.app[appkeys.REALTIME]


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    values = {**{f: getattr(settings, f) for f in Settings.env_names()}, **overrides}
    values.pop("instance_id", None)  # each process its own (hostname-pid)
    for field, name in Settings.env_names().items():
        value = values.get(field)
        if value is not None:
            env[name] = str(value)
    return env


class ServeProcess:
    """``pulse serve`` in a subprocess on a free port, on the session's stores."""

    def __init__(self, settings: Settings, log_path: Path, **overrides: Any) -> None:
        self.port = free_port()
        self.env = settings_env(settings, host="127.0.0.1", port=self.port, **overrides)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServeProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], env=self.env, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, timeout=60, process=self.proc)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"pulse serve did not start; log: {self.log_path.read_text()[-3000:]}")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, 20)
        self._log.close()


class QuietApi(Api):
    """Registers users and waits for their welcome notification to be stored and pushed,
    so a test's sockets see only the events the test itself causes. Stored is not yet
    pushed (the consumer checks the account still exists in between): with the session's
    offset log at hand, the welcome is awaited there too."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, offset_log: Any = None) -> None:
        super().__init__(session, base_url)
        self.offset_log = offset_log

    async def register(self, prefix: str = "u", **fields: Any) -> Account:
        account = await super().register(prefix, **fields)

        async def welcomed() -> bool:
            status, body, _ = await self.request("GET", "/notifications", token=account.token)
            return status == 200 and any(n["type"] == "welcome" for n in body["items"])

        async def pushed() -> bool:
            entries = await self.offset_log.read_after(account.id, START_OF_LOG)
            return any(e.event == "notification:new" for e in entries or ())

        await eventually(welcomed, timeout=10, interval=0.1)
        if self.offset_log is not None:
            await eventually(pushed, timeout=10, interval=0.1)
        return account


async def follow(api: Api, follower: Account, *followees: Account) -> None:
    """``follower`` follows each of ``followees`` (presence:query answers only for those
    followed or sharing a conversation)."""
    for followee in followees:
        status, _, _ = await api.request("PUT", f"/users/{followee.id}/follow", token=follower.token)
        assert status == 200
