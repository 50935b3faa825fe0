"""Real-time fixtures: in-process instances sharing the session's stores, a second
instance as a `pulse serve` process, and a REST client whose users are welcomed before a
test sees their sockets. The helpers are in tests/helpers/realtime.py."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from server import appkeys
from server.app import create_app
from storage.embedded.processes import free_port
from tests.helpers.app import close_test_server
from tests.helpers.realtime import Instance, QuietApi, ServeProcess


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


@pytest.fixture(scope="session")
def instance_b(serve_process) -> ServeProcess:
    """A second instance: a real `pulse serve` process."""
    return serve_process()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api(server) -> AsyncIterator[QuietApi]:
    async with aiohttp.ClientSession() as session:
        yield QuietApi(session, str(server.make_url("")).rstrip("/"), server.app[appkeys.PUSHER].offset_log)
