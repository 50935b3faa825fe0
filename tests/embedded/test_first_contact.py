"""What a new user does in the first minute of `make run`, and what its log must show."""
from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_sixty_authenticated_requests_in_a_row_answer_without_a_server_error(api):
    """Spread over a few seconds so the per-token request counts are synced to Redis
    several times (the sync once sent a command Redis 6.2 lacks: a 500 a second)."""
    user = await api.register("first")
    statuses = []
    for i in range(60):
        method, path, body = [("POST", "/posts", {"body": f"hello {i}"}), ("GET", "/users/me", None),
                              ("GET", "/feed", None), ("GET", "/notifications/unread-count", None)][i % 4]
        status, _, _ = await api.request(method, path, token=user.token, json=body)
        statuses.append(status)
        await asyncio.sleep(0.05)
    assert all(s < 500 for s in statuses), statuses
    assert statuses.count(201) == 15 and statuses.count(200) == 45, statuses

