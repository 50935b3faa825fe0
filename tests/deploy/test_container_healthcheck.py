"""deploy/healthcheck.py, the image's HEALTHCHECK: run as Docker runs it (a process and
its exit status) against real listeners on 127.0.0.1."""
from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from storage.embedded.processes import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "healthcheck.py"

spec = importlib.util.spec_from_file_location("container_healthcheck", SCRIPT)
healthcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(healthcheck)


def run_check(mode: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), mode], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def http_server():
    """An HTTP server whose /healthz answers with the status given to it."""
    servers = []

    def start(status: int) -> int:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(status if self.path == "/healthz" else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def listeners():
    """TCP listeners standing in for the four stores."""
    sockets = []

    def open_one() -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sockets.append(sock)
        return sock.getsockname()[1]

    yield open_one
    for sock in sockets:
        sock.close()


def test_http_mode_is_healthy_when_healthz_answers_200(http_server):
    done = run_check("http", {"PULSE_PORT": str(http_server(200))})
    assert done.returncode == 0, done.stderr


def test_http_mode_is_unhealthy_when_healthz_fails(http_server):
    done = run_check("http", {"PULSE_PORT": str(http_server(503))})
    assert done.returncode == 1
    assert "503" in done.stderr


def test_http_mode_is_unhealthy_when_nothing_listens():
    nothing_listens = free_port()
    done = run_check("http", {"PULSE_PORT": str(nothing_listens)})
    assert done.returncode == 1
    assert "unhealthy" in done.stderr


def test_stores_mode_is_healthy_when_every_store_accepts(listeners):
    pg, mongo_a, mongo_b, redis, amqp = (listeners() for _ in range(5))
    env = {
        "PULSE_POSTGRES_DSN": f"postgresql://pulse:secret@127.0.0.1:{pg}/pulse",
        "PULSE_MONGO_URL": f"mongodb://127.0.0.1:{mongo_a},127.0.0.1:{mongo_b}/?replicaSet=rs0",
        "PULSE_REDIS_URL": f"redis://127.0.0.1:{redis}/0",
        "PULSE_AMQP_URL": f"amqp://pulse:secret@127.0.0.1:{amqp}/",
    }
    done = run_check("stores", env)
    assert done.returncode == 0, done.stderr


def test_stores_mode_names_the_store_that_does_not_answer(listeners):
    down = free_port()  # nothing listens there
    env = {
        "PULSE_POSTGRES_DSN": f"postgresql://pulse:secret@127.0.0.1:{listeners()}/pulse",
        "PULSE_MONGO_URL": f"mongodb://127.0.0.1:{listeners()}/?replicaSet=rs0",
        "PULSE_REDIS_URL": f"redis://127.0.0.1:{listeners()}/0",
        "PULSE_AMQP_URL": f"amqp://pulse:secret@127.0.0.1:{down}/",
    }
    done = run_check("stores", env)
    assert done.returncode == 1
    assert f"127.0.0.1:{down}" in done.stderr


def test_stores_mode_without_configuration_is_unhealthy():
    done = run_check("stores", {})
    assert done.returncode == 1
    assert "PULSE_POSTGRES_DSN" in done.stderr


def test_unknown_mode_is_a_usage_error():
    done = run_check("tcp", {})
    assert done.returncode == 2
    assert "usage" in done.stderr


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        ("postgresql://u:p%40ss@postgres:5432/pulse", [("postgres", 5432)]),
        ("postgresql://postgres-replica/pulse", [("postgres-replica", 5432)]),
        ("mongodb://mongo:27017,mongo2,mongo3:27018/?replicaSet=rs0",
         [("mongo", 27017), ("mongo2", 27017), ("mongo3", 27018)]),
        ("redis://redis/0", [("redis", 6379)]),
        ("amqp://u:p@rabbitmq/", [("rabbitmq", 5672)]),
        ("amqps://u:p@[::1]:5671/", [("::1", 5671)]),
    ],
)
def test_store_addresses_apply_each_scheme_default_port(url, addresses):
    assert healthcheck.store_addresses(url) == addresses
