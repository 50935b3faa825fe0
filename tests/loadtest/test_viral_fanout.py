"""The viral fan-out benchmark scenario, small, against the session's app: it measures what
the benchmark reports (reads and fan-out lag per phase, each large post seen by followers).
No speed is asserted."""
from __future__ import annotations

import pytest

from loadtest.viral_fanout import SUMMARY, _split, fanout_scenario


def test_posts_are_spread_over_the_rounds():
    assert [len(r) for r in _split(range(30), 2)] == [15, 15]
    assert [len(r) for r in _split(range(10), 3)] == [4, 3, 3]
    assert sum(_split(range(7), 1), []) == list(range(7))


@pytest.mark.asyncio(loop_scope="session")
async def test_fanout_scenario_measures_both_phases_and_sees_every_large_post(api, server):
    large = [await api.register("vlg") for _ in range(2)]
    users = [await api.register("vrd") for _ in range(4)]
    for user in users:
        for account in large:
            status, _, _ = await api.request("PUT", f"/users/{account.id}/follow", token=user.token)
            assert status == 200
    seed = {"password": users[0].password, "users": [{"id": u.id, "username": u.username} for u in users],
            "tokens": {str(i): u.token for i, u in enumerate(users)},
            "large_accounts": [{"id": a.id, "username": a.username} for a in large], "large_followers": 4}
    result = await fanout_scenario([str(server.make_url("")).rstrip("/")], seed, readers=2, think_ms=20,
                                   probes=1, probe_seconds=0.5, rounds=1, phase_seconds=3, posts=1, watchers=2)
    assert set(SUMMARY) <= set(result)
    for kind in ("baseline", "viral"):
        assert result[kind]["phases"] == 1 and result[kind]["reads"] > 0 and result[kind]["read_errors"] == 0
        assert result[kind]["probe_posts"] > 0 and result[kind]["probe_lag"]["p99_ms"] is not None
    assert result["viral"]["large_posts_seen"] == 2 * 2 and result["viral"]["large_posts_not_seen"] == 0
    # The baseline watches as many posts of a small control account: the same requests.
    assert result["baseline"]["control_posts_seen"] == 2 * 2 and result["baseline"]["control_posts_not_seen"] == 0
    assert result["large_post_visible_max_ms"] == result["viral"]["large_post_visible"]["max_ms"] > 0
    assert len(result["load_averages_start"]) == 3
