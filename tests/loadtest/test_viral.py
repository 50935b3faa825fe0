"""The viral-likes benchmark scenario, small, against the session's app: it measures what
the benchmark reports (one notification counting every like, the pushes that carried it)."""
from __future__ import annotations

import pytest

from loadtest.viral import SUMMARY, likes_scenario

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_likes_scenario_reports_one_notification_counting_every_like(server):
    result = await likes_scenario([str(server.make_url("")).rstrip("/")], likes=12, seconds=1.0)
    assert set(SUMMARY) <= set(result)
    assert result["likes_ok"] == 12 and result["notifications_for_post"] == 1
    assert result["notification_count"] == 12 and result["last_push_count"] == 12
    assert result["push_counts"] == sorted(result["push_counts"]) and result["pushes"] == len(result["push_counts"])
    assert len(result["notification_actor_ids"]) == 3 and result["passed"] is True
