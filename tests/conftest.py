"""Fixtures: every test session gets fresh namespaces in every store — its own
PostgreSQL database, Redis db, MongoDB (a SecantusDB server of its own) and RabbitMQ
vhost — so runs never collide. The stores are real; nothing is mocked.

Override the servers with PULSE_TEST_POSTGRES_DSN (an admin DSN), PULSE_TEST_REDIS_URL
(without a db number) and PULSE_TEST_AMQP_URL (without a vhost). What the fixtures are
made of is in tests/helpers/ (import it from there, never from a conftest).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Iterator
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from kernel.settings import Settings
from loadtest import namespaces
from server.app import create_app
from storage.embedded.processes import free_port
from tests.helpers.api import Api
from tests.helpers.app import close_test_server, make_settings
from storage.embedded.pg_cluster import PostgresCluster
from tests.helpers.pg_cluster import running_pg_cluster
from tests.helpers.realtime import ServeProcess, SocketClient
from tests.helpers.stores import AMQP_BASE_URL, PG_ADMIN_DSN, REDIS_BASE_URL, RUN_ID, SecantusServer
from tests.helpers.waiting import run_sync


# --- PostgreSQL ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def make_pg_database() -> Iterator:
    """Creates fresh databases on demand; all dropped at the end of the session."""
    created: list[str] = []

    def make(suffix: str = "") -> str:
        name = f"pulse_test_{RUN_ID}{suffix}"
        run_sync(namespaces.create_database(PG_ADMIN_DSN, name))
        created.append(name)
        return namespaces.with_database(PG_ADMIN_DSN, name)

    yield make
    for name in created:
        run_sync(namespaces.drop_database(PG_ADMIN_DSN, name))


@pytest.fixture(scope="session")
def pg_dsn(make_pg_database) -> str:
    return make_pg_database()


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A primary + streaming replica of the module's own."""
    with running_pg_cluster(replica=True) as cluster:
        yield cluster


# --- Redis -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Claims a Redis db number (1..15) no other running session holds, and empties it."""
    claim = namespaces.redis_claim(RUN_ID)
    db = namespaces.claim_redis_db(REDIS_BASE_URL, claim)
    if db is None:
        pytest.fail("no free Redis db: 15 test sessions hold one (keys pulse-test:claim:* in db 0)")
    yield f"{REDIS_BASE_URL}/{db}"
    namespaces.release_redis_db(REDIS_BASE_URL, db, claim)


# --- MongoDB (SecantusDB) -----------------------------------------------------------------

@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    server = SecantusServer().start()
    yield server.url
    server.stop()


# --- RabbitMQ ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def make_amqp_vhost() -> Iterator:
    """Creates fresh RabbitMQ vhosts (guest gets all permissions); deleted at the end."""
    if shutil.which("rabbitmqctl") is None and "PULSE_TEST_AMQP_URL" not in os.environ:
        pytest.skip("RabbitMQ is not installed here (rabbitmqctl not found)")
    created: list[str] = []

    def make(suffix: str = "") -> str:
        vhost = f"pulse_test_{RUN_ID}{suffix}"
        namespaces.add_vhost(vhost)
        created.append(vhost)
        return f"{AMQP_BASE_URL}/{quote(vhost, safe='')}"

    yield make
    for vhost in created:
        try:
            namespaces.delete_vhost(vhost)
        except subprocess.SubprocessError:
            pass


@pytest.fixture(scope="session")
def amqp_url(make_amqp_vhost) -> str:
    return make_amqp_vhost()


# --- the app -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def settings(pg_dsn, redis_url, mongo_url, amqp_url) -> Settings:
    return make_settings(postgres_dsn=pg_dsn, redis_url=redis_url, mongo_url=mongo_url, amqp_url=amqp_url)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def server(settings) -> AsyncIterator[TestServer]:
    """The app under test, served on a free port for the whole session."""
    srv = TestServer(create_app(settings), host="127.0.0.1", port=free_port())
    await srv.start_server()
    yield srv
    await close_test_server(srv)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api(server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, str(server.make_url("")).rstrip("/"))


@pytest.fixture(scope="session")
def start_app(settings):
    """Starts another instance of the app with changed settings, sharing the session's
    stores: ``async with start_app(login_failures_per_account=3) as api: ...``."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Api]:
        srv = TestServer(create_app(settings.replace(**overrides)), host="127.0.0.1", port=free_port())
        await srv.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                yield Api(session, str(srv.make_url("")).rstrip("/"), srv.app)
        finally:
            await close_test_server(srv)

    return start


@pytest.fixture(scope="session")
def serve_process(settings, tmp_path_factory):
    """Factory of `pulse serve` subprocesses on the session's stores; all stopped at the
    end of the session."""
    started: list[ServeProcess] = []

    def start(**overrides: Any) -> ServeProcess:
        proc = ServeProcess(settings, tmp_path_factory.mktemp("serve") / "serve.log", **overrides).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


# --- Socket.IO clients -----------------------------------------------------------------------

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
