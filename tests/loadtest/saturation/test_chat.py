"""The stepped chat run: who sends what, and a short run against the real app (messages
really sent over sockets, stored, acked and delivered to every member)."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from loadtest.saturation import chat, cpu, run

def test_senders_take_turns_and_members_alternate_between_servers():
    shape = chat.Shape()  # 8 groups of 50 on 2 servers
    assert shape.users == 400
    senders = [shape.sender(n) for n in range(400)]
    # 400 messages: each member sends exactly one, groups in turn.
    assert sorted(senders) == list(range(400))
    assert [s // 50 for s in senders[:8]] == list(range(8))
    by_server = Counter(shape.server_of(s) for s in senders)
    assert by_server == {0: 200, 1: 200}
    # A group's members sit on both servers.
    assert {shape.server_of(m) for m in range(50)} == {0, 1}


def test_message_bodies_carry_step_and_due_time():
    body = chat.message_body(3, 1764620000.123456, 17)
    assert chat.parse_body(body) == (3, 1764620000.123456)
    assert chat.parse_body("lt|1.0|2|load test message") is None
    assert chat.parse_body(None) is None
    assert chat.parse_body("sat|x|y|z") is None


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_a_short_stepped_run_against_the_app(api, server):
    shape = chat.Shape(groups=2, group_size=3, servers=1)
    accounts = [await api.register("sat") for _ in range(shape.users)]
    chat_accounts = [{"token": a.token, "user_id": a.id} for a in accounts]
    conversations = await asyncio.to_thread(run._create_conversations, api.base_url, chat_accounts, shape)
    workers = await asyncio.to_thread(chat.Workers, [api.base_url], [{"token": a.token} for a in accounts],
                                      conversations, shape)
    try:
        connected, errors = await asyncio.to_thread(workers.wait_connected)
        assert (connected, errors) == (6, {})
        import os

        meter = cpu.CpuMeter({"pulse": cpu.fixed(os.getpid()), "clients": cpu.fixed(*workers.pids)})
        result = await asyncio.to_thread(
            chat.run_steps, workers, shape, [30, 60], seconds=1.0, drain=2.0, meter=meter,
            server_groups=["pulse"], store_groups=[], log=lambda line: None)
    finally:
        await asyncio.to_thread(workers.stop)
    steps = result["steps"]
    assert [s["target_per_second"] for s in steps] == [30, 60]
    for step, messages in zip(steps, (10, 20)):  # deliveries/s ÷ 3 members × 1 s
        assert step["messages"] == messages and step["expected"] == 3 * messages
        assert step["acked"] + step["ack_errors"] + step["unacked"] == messages
        assert 0 <= step["delivered"] <= step["expected"]
        assert step["p50_ms"] is None or step["p50_ms"] >= 0
        assert step["server_cpu_us_per_delivery"] is None or step["server_cpu_us_per_delivery"] > 0
        assert 0 <= step["machine_cpu_percent"] <= 100
    assert result["max_sustained_per_second"] in {0, *(s["delivered_per_second"] for s in steps)}
    # What was acked was stored: each conversation's history holds the run's messages.
    stored = 0
    for conversation_id, owner in zip(conversations, (accounts[0], accounts[3])):
        status, page, _ = await api.request("GET", f"/conversations/{conversation_id}/messages?limit=100",
                                            token=owner.token)
        assert status == 200
        ours = [m for m in page["items"] if chat.parse_body(m["body"]) is not None]
        stored += len(ours)
    # The warm-up's messages (step 0, 1 s at the first rate) are stored too.
    assert stored >= sum(s["acked"] for s in steps)
