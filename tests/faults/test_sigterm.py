"""SIGTERM to a ``pulse serve`` process: it stops listening, lets the request in flight
finish, and exits 0. (Telling sockets to reconnect and cleaning presence up on shutdown
are covered by the real-time tests.)

The request in flight is a registration with the argon2 cost turned up (the password hash
takes a noticeable while), sent with ``Expect: 100-continue``: the server answers "100
Continue" from inside request handling, so we know the request is being handled before
the signal goes out. (aiohttp stops reading from connections once shutdown begins, so a
body still to be uploaded would not count as in flight.)"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import asyncpg
import orjson
import pytest

from storage.embedded.processes import free_port
from tests.helpers.app import own_namespaces
from tests.helpers.stores import RUN_ID

pytestmark = pytest.mark.asyncio(loop_scope="session")


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def wait_until(predicate, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


def read_until(sock: socket.socket, marker: bytes, buffer: bytes = b"") -> tuple[bytes, bytes]:
    while marker not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before {marker!r}; got {buffer!r}")
        buffer += chunk
    head, _, rest = buffer.partition(marker)
    return head, rest


def register_through_sigterm(port: int, proc: subprocess.Popen, body: bytes) -> dict:
    """Blocking client (run in a thread): starts the request, sends SIGTERM while it is
    being handled, then reads the answer."""
    seen: dict = {}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        interim, rest = read_until(sock, b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100"), interim  # the request is being handled
        sock.sendall(body)
        sock.settimeout(0)  # a look without waiting (with a timeout, recv waits for data first)
        try:
            seen["answered_before_signal"] = bool(sock.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            seen["answered_before_signal"] = False  # still hashing the password
        sock.settimeout(30)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while listening(port):
            assert time.monotonic() < deadline, "the listener stayed open after SIGTERM"
            time.sleep(0.02)
        seen["alive_after_listener_closed"] = proc.poll() is None
        head, rest = read_until(sock, b"\r\n\r\n", rest)
        status_line, *header_lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-response"
            rest += chunk
    seen["status"] = int(status_line.split()[1])
    seen["body"] = orjson.loads(rest[:length])
    return seen


@pytest.fixture
def serve_process(settings, make_pg_database, make_amqp_vhost):
    """``python -m server.cli serve`` with PULSE_* pointing at stores of its own."""
    port = free_port()
    pg_dsn = make_pg_database(f"_sigterm_{uuid.uuid4().hex[:6]}")
    own = own_namespaces(make_amqp_vhost, "sigterm")
    env = {
        **os.environ,
        "PULSE_POSTGRES_DSN": pg_dsn, "PULSE_REDIS_URL": settings.redis_url,
        "PULSE_MONGO_URL": settings.mongo_url, "PULSE_AMQP_URL": own["amqp_url"],
        "PULSE_NAMESPACE": own["namespace"], "PULSE_MONGO_DB": own["mongo_db"],
        "PULSE_INSTANCE_ID": f"sigterm-{RUN_ID}",
        # Expensive password hashing: a registration stays in flight for a while.
        "PULSE_ARGON2_TIME_COST": "20", "PULSE_ARGON2_MEMORY_KIB": "65536", "PULSE_ARGON2_PARALLELISM": "1",
    }
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield proc, port, pg_dsn
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_sigterm_finishes_the_request_in_flight_and_exits_0(serve_process):
    proc, port, pg_dsn = serve_process
    await wait_until(lambda: listening(port) or proc.poll() is not None, "the server to listen")
    assert proc.poll() is None, proc.stdout.read().decode()

    username = f"sig{uuid.uuid4().hex[:8]}"
    body = orjson.dumps({"email": f"{username}@example.com", "username": username,
                         "password": "correct horse battery"})
    seen = await asyncio.to_thread(register_through_sigterm, port, proc, body)
    assert seen["answered_before_signal"] is False, seen  # really in flight when the signal came
    assert seen["alive_after_listener_closed"] is True
    assert seen["status"] == 201, seen
    assert seen["body"]["user"]["username"] == username and seen["body"]["token"]

    output = (await asyncio.to_thread(proc.communicate, timeout=30))[0].decode()
    assert proc.returncode == 0, output
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users WHERE username = $1", username) == 1
    finally:
        await conn.close()


async def test_sigterm_when_idle_exits_0(serve_process):
    proc, port, _ = serve_process
    await wait_until(lambda: listening(port) or proc.poll() is not None, "the server to listen")
    proc.send_signal(signal.SIGTERM)
    output = (await asyncio.to_thread(proc.communicate, timeout=30))[0].decode()
    assert proc.returncode == 0, output
    assert not listening(port)
