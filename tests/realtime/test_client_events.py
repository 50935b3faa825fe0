"""Client events: malformed payloads get ``{ok: false}`` acks and the socket stays
connected; presence queries; rate limit on sends."""
from __future__ import annotations

import pytest

from tests.helpers.realtime import follow
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

BAD_PAYLOADS = [
    ("message:send", None),
    ("message:send", "hello"),
    ("message:send", {"conversation_id": "c", "body": "", "client_id": "x"}),
    ("message:send", {"conversation_id": "c", "body": "x" * 4001, "client_id": "x"}),
    ("message:send", {"conversation_id": "c", "body": "hi"}),
    ("message:send", {"conversation_id": 5, "body": "hi", "client_id": "x"}),
    ("message:send", {"conversation_id": "c", "body": "nul\x00here", "client_id": "x"}),
    ("message:send", {"conversation_id": "c", "body": "hi", "client_id": "x\x00"}),
    ("message:read", {}),
    ("message:read", [1, 2]),
    ("message:read", {"conversation_id": "c", "message_id": None}),
    ("typing", {"conversation_id": "c"}),
    ("typing", {"conversation_id": "c", "typing": "yes"}),
    ("presence:query", {"user_ids": "abc"}),
    ("presence:query", {"user_ids": [1, 2]}),
    ("presence:query", {"user_ids": ["u"] * 101}),
    ("presence:query", 42),
]


async def test_malformed_payloads_get_400_acks_and_the_socket_stays_connected(api, instance_a, clients):
    user = await api.register("rtbadp")
    socket = await clients(instance_a.url, user.token)
    for event, payload in BAD_PAYLOADS:
        ack = await socket.call(event, payload)
        assert ack["ok"] is False, (event, payload, ack)
        assert ack["error"]["status"] == 400 and ack["error"]["title"] == "Bad Request", (event, payload, ack)
    assert socket.sio.connected
    assert await socket.call("presence:query", {"user_ids": [user.id]}) == {"ok": True, "online": [user.id]}


async def test_presence_is_online_with_a_socket_on_any_instance(api, instance_a, instance_b, clients):
    asker, one, two, nobody = [await api.register("rtp") for _ in range(4)]
    await follow(api, asker, one, two, nobody)
    ask = await clients(instance_a.url, asker.token)
    one_socket = await clients(instance_b.url, one.token)  # on the other instance
    await clients(instance_a.url, two.token)
    two_again = await clients(instance_b.url, two.token)  # two devices
    ids = [one.id, two.id, nobody.id, "not-a-user"]
    assert await ask.call("presence:query", {"user_ids": ids}) == {"ok": True, "online": [one.id, two.id]}
    # Closing one of two devices keeps the user online; closing the only one does not.
    await two_again.sio.disconnect()
    await one_socket.sio.disconnect()

    async def only_two_online():
        ack = await ask.call("presence:query", {"user_ids": ids})
        return ack["online"] == [two.id]

    await eventually(only_two_online, timeout=10, interval=0.1)
    assert await ask.call("presence:query", {"user_ids": []}) == {"ok": True, "online": []}


async def test_presence_port_answers_for_the_services(api, instance_a, instance_b, clients):
    from server import appkeys

    user, offline = await api.register("rtpp"), await api.register("rtpp")
    await clients(instance_b.url, user.token)
    presence = instance_a.app[appkeys.PRESENCE]
    assert await presence.online([offline.id, user.id, user.id]) == [user.id]


async def test_socket_events_are_rate_limited_per_user_across_sockets_and_instances(api, start_instance, clients):
    user = await api.register("rtrl")
    limits = {"socket_sends_per_10_seconds": 2, "socket_reads_per_10_seconds": 2,
              "socket_typing_per_10_seconds": 2, "socket_presence_queries_per_10_seconds": 2}
    events = [
        ("message:send", {"conversation_id": "c", "body": "hi", "client_id": "x"}),
        ("message:read", {"conversation_id": "c", "message_id": "m"}),
        ("typing", {"conversation_id": "c", "typing": True}),
        ("presence:query", {"user_ids": [user.id]}),
    ]
    async with start_instance(**limits) as one, start_instance(**limits) as two:
        here = await clients(one.url, user.token)
        there = await clients(two.url, user.token)
        for event, data in events:
            # Two sockets on two instances share one budget: the third event is refused.
            acks = [await here.call(event, data), await there.call(event, data), await there.call(event, data)]
            assert [a.get("error", {}).get("status") == 429 for a in acks] == [False, False, True], (event, acks)
            assert acks[2]["retry_after"] >= 1
            assert (await here.call(event, data))["error"]["status"] == 429
        # Limited, not dropped: both sockets are still connected.
        assert here.sio.connected and there.sio.connected
