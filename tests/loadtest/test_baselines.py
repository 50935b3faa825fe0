"""The stepped fan-out of the bench: the step loop, and the Pulse chat client against the
real app (its messages are really sent, stored and delivered to every member)."""
from __future__ import annotations

import time

import pytest

from loadtest.baselines import offered_steps, pulse_chat_client

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_steps_stop_climbing_once_the_stack_falls_behind():
    samples: list[float] = []
    sends: list[int] = []

    async def send(n: int) -> None:
        sends.append(n)
        # Keeps up during the first step only: after that, half of the sends get nowhere.
        if len(sends) <= 50 or n % 2 == 0:
            samples.extend([1.0] * 10)  # one send reaches the room's 10 members

    result = await offered_steps(send, samples, rooms=2, per_room=10, rates=[1000, 2000, 4000],
                                 seconds=0.5, max_p99_ms=100)
    assert [s["offered_per_second"] for s in result["steps"]] == [1000, 2000]  # stopped after 2000
    first, second = result["steps"]
    assert first["per_second"] == pytest.approx(1000, rel=0.05)
    assert second["per_second"] < 0.8 * 2000
    assert result["max_sustained_per_second"] == first["per_second"]


async def test_pulse_chat_client_sends_through_the_whole_chat_path(api):
    accounts = [await api.register("fan") for _ in range(6)]
    started = time.time()
    result = await pulse_chat_client(
        [api.base_url], [{"token": a.token, "user_id": a.id} for a in accounts], rooms=2, per_room=3,
        rates=[30, 60], seconds=1.0)
    assert [s["offered_per_second"] for s in result["steps"]] == [30, 60]
    for step in result["steps"]:
        # Every send reaches its 3 members (the sender too) within the step.
        assert step["count"] >= 0.8 * step["offered_per_second"] and 0 <= step["p99_ms"] < 5000
    # Whether a step counts as sustained depends on this machine's load at the moment
    # (p99 against a bound): the figure is one of the steps' rates or 0, never a timing here.
    assert result["max_sustained_per_second"] in {0, *(s["per_second"] for s in result["steps"])}
    # The messages were stored: each room's history holds what was sent to it.
    sent = 0
    for conversation_id, owner in zip(result["conversation_ids"], (accounts[0], accounts[3])):
        status, page, _ = await api.request("GET", f"/conversations/{conversation_id}/messages?limit=100",
                                            token=owner.token)
        assert status == 200 and page["items"]
        assert all(m["body"].startswith("lt|") and float(m["body"].split("|")[1]) >= started - 1
                   for m in page["items"])
        sent += len(page["items"])
    assert sent == pytest.approx((30 + 60) / 3, abs=4)
