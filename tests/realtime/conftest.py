"""Real-time test helpers: Socket.IO clients, `pulse serve` subprocesses and in-process
instances sharing the session's stores."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio
import socketio
from aiohttp.test_utils import TestServer

from kernel.settings import Settings
from server import appkeys
from server.app import create_app
from storage.redis.offset_log import START_OF_LOG
from tests.conftest import Account, Api, close_test_server, eventually, free_port, wait_for_port

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


@pytest_asyncio.fixture(loop_scope="session")
async def clients() -> AsyncIterator:
    """``await clients(url, token, offset=None)`` -> a connected SocketClient, closed after the test."""
    made: list[SocketClient] = []

    async def connect(url: str, token: str | None, offset: str | None = None, *, reconnection: bool = False,
                      **auth_extra: Any) -> SocketClient:
        client = SocketClient(reconnection=reconnection)
        made.append(client)
        return await client.connect(url, token, offset, **auth_extra)

    yield connect
    for client in made:
        try:
            # Bounded: closing a client whose server is gone must not hang the session.
            await asyncio.wait_for(client.close(), 10)
        except Exception:  # noqa: BLE001 - a client whose server is gone
            pass


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


@pytest.fixture(scope="session")
def start_instance(settings):
    """``async with start_instance(**overrides) as inst`` -> an in-process instance."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Instance]:
        port = overrides.pop("port", None) or free_port()
        app = create_app(settings.replace(**overrides))
        srv = TestServer(app, host="127.0.0.1", port=port)
        await srv.start_server()
        try:
            yield Instance(str(srv.make_url("")).rstrip("/"), app)
        finally:
            await close_test_server(srv)

    return start


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def instance_a(server) -> Instance:
    """The session's in-process server as an instance."""
    return Instance(str(server.make_url("")).rstrip("/"), server.app)


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
            wait_for_port(self.port, timeout=60)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"pulse serve did not start; log: {self.log_path.read_text()[-3000:]}")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture(scope="session")
def serve_process(settings, tmp_path_factory):
    """Factory of `pulse serve` subprocesses; all stopped at the end of the session."""
    started: list[ServeProcess] = []

    def start(**overrides: Any) -> ServeProcess:
        proc = ServeProcess(settings, tmp_path_factory.mktemp("serve") / "serve.log", **overrides).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def instance_b(serve_process) -> ServeProcess:
    """A second instance: a real `pulse serve` process."""
    return serve_process()


async def eventually(check, timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Polls ``await check()`` until it returns something truthy (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


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

        await eventually(welcomed)
        if self.offset_log is not None:
            await eventually(pushed)
        return account


async def follow(api: Api, follower: Account, *followees: Account) -> None:
    """``follower`` follows each of ``followees`` (presence:query answers only for those
    followed or sharing a conversation)."""
    for followee in followees:
        status, _, _ = await api.request("PUT", f"/users/{followee.id}/follow", token=follower.token)
        assert status == 200


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api(server) -> AsyncIterator[QuietApi]:
    async with aiohttp.ClientSession() as session:
        yield QuietApi(session, str(server.make_url("")).rstrip("/"), server.app[appkeys.PUSHER].offset_log)
