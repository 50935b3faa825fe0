"""Fault tests: each stops a store of its own (never the machine's shared services); an
answer must come, and quickly, while it is down."""
from __future__ import annotations

import asyncio
from typing import Any

# Well below what the app may spend on a store that is down (pool acquire + connect
# timeouts, server selection): an answer must come, and quickly, not a hung request.
CLIENT_DEADLINE_SECONDS = 5.0


async def within_deadline(request) -> Any:
    """Awaits an ``api.request(...)``; a hung request fails the test instead of hanging it."""
    return await asyncio.wait_for(request, CLIENT_DEADLINE_SECONDS)


def assert_store_problem(status: int, body: Any, resp, store: str) -> None:
    assert status == 503, body
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == 503 and body["store"] == store, body
    assert "Retry-After" in resp.headers
