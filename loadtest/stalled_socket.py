"""A Socket.IO client that stops reading: it connects like any client (websocket upgrade,
Engine.IO OPEN, Socket.IO CONNECT) on a raw socket with a 4 KiB receive buffer, then never
reads again, so what the server sends piles up on its side while the TCP connection stays
open. The slow-consumer tests (``tests/realtime/test_limits.py``) and the stalled-client
benchmark (``loadtest/realtime_perf/bench.py``) both use it."""
from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from urllib.parse import urlsplit

import orjson


class StalledSocket:
    def __init__(self) -> None:
        self.sock: socket.socket | None = None

    async def connect(self, url: str, token: str) -> "StalledSocket":
        loop = asyncio.get_running_loop()
        parts = urlsplit(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, (parts.hostname, parts.port))
        self.sock = sock
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(sock, (
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        await self._read_until(b'"sid"')  # the Engine.IO OPEN packet
        await loop.sock_sendall(sock, masked_text_frame("40" + orjson.dumps({"token": token}).decode()))
        await self._read_until(b"40{")  # the Socket.IO CONNECT answer; from now on, nothing is read
        return self

    async def _read_until(self, marker: bytes) -> None:
        loop = asyncio.get_running_loop()
        seen = b""
        while marker not in seen:
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), 10)
            if not chunk:
                raise ConnectionError(f"closed before {marker!r}: {seen[-200:]!r}")
            seen += chunk

    async def drain(self, timeout: float = 30.0) -> tuple[int, bool]:
        """Reads what is left: (bytes read, True if the server had closed the connection)."""
        loop = asyncio.get_running_loop()
        got = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), 2)
            except asyncio.TimeoutError:
                return got, False  # nothing more and still open: not dropped
            except OSError:
                return got, True
            if not chunk:
                return got, True
            got += len(chunk)
        return got, False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def masked_text_frame(text: str) -> bytes:
    """A websocket text frame as a client must send it (masked); up to 64 KiB."""
    data = text.encode()
    if len(data) < 126:
        header = bytes((0x81, 0x80 | len(data)))
    elif len(data) < 1 << 16:
        header = bytes((0x81, 0x80 | 126)) + len(data).to_bytes(2, "big")
    else:
        raise ValueError("a frame of 64 KiB or more is not needed here")
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
