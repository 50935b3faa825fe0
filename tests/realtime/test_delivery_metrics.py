"""pulse_socketio_deliveries_total counts server events written to sockets, one per
recipient socket, by event."""
from __future__ import annotations

import pytest

from server import appkeys

pytestmark = pytest.mark.asyncio(loop_scope="session")


def delivered(instance, event: str) -> float:
    return instance.app[appkeys.METRICS].registry.get_sample_value(
        "pulse_socketio_deliveries_total", {"event": event}) or 0


async def test_deliveries_are_counted_per_socket(api, instance_a, clients):
    alice, bob = await api.register("dmeta"), await api.register("dmetb")
    status, conv, _ = await api.request("POST", "/conversations", token=alice.token, json={"member_ids": [bob.id]})
    assert status == 201
    sockets = [await clients(instance_a.url, alice.token), await clients(instance_a.url, alice.token),
               await clients(instance_a.url, bob.token)]
    before = delivered(instance_a, "message:new")
    status, _, _ = await api.request("POST", f"/conversations/{conv['id']}/messages", token=alice.token,
                                     json={"body": "counted", "client_id": "dm-1"})
    assert status == 201
    for socket in sockets:
        assert (await socket.next_event("message:new"))["message"]["body"] == "counted"
    assert delivered(instance_a, "message:new") - before == 3  # two of Alice's devices and Bob's
