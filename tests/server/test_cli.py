"""The `pulse` command: configuration checks and embedded mode end to end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from kernel.settings import ConfigError, Settings
from storage.embedded.processes import free_port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(extra)
    return env


def test_half_configured_stores_are_refused_naming_what_is_missing():
    env = clean_env(PULSE_POSTGRES_DSN="postgresql://x@127.0.0.1/db", PULSE_REDIS_URL="redis://127.0.0.1/0")
    proc = subprocess.run([sys.executable, "-m", "server.cli", "serve"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "PULSE_MONGO_URL" in proc.stderr and "PULSE_AMQP_URL" in proc.stderr
    assert "PULSE_POSTGRES_DSN" not in proc.stderr.split("missing:")[1]


def test_settings_from_env_parse_types_and_the_off_switch():
    s = Settings.from_env({"PULSE_PORT": "9000", "PULSE_RATE_LIMITS": "off", "PULSE_RUN_WORKERS": "false",
                           "PULSE_ERASURE_RECOVERY_DAYS": "0.5"})
    assert (s.port, s.rate_limits, s.run_workers, s.erasure_recovery_days) == (9000, False, False, 0.5)
    assert s.embedded
    with pytest.raises(ConfigError, match="PULSE_PORT"):
        Settings.from_env({"PULSE_PORT": "eighty"})


def _http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.mark.slow
def test_embedded_mode_starts_and_serves_a_registration(tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = clean_env(PULSE_DATA_DIR=str(tmp_path / "data"), PULSE_ARGON2_MEMORY_KIB="8192",
                    PULSE_ARGON2_TIME_COST="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            try:
                if _http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("embedded server did not come up:\n" + log_path.read_text())
        name = "emb" + uuid.uuid4().hex[:8]
        status, body = _http("POST", f"http://127.0.0.1:{port}/api/v1/auth/register",
                             {"email": f"{name}@example.com", "username": name, "password": "longenough"})
        assert status == 201, body
        assert body["user"]["username"] == name and body["token"]
        status, body = _http("GET", f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    output = log_path.read_text()
    assert "embedded" in output.lower() and "in-process" in output
    assert proc.returncode == 0, output
