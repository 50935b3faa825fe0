"""Pushing events to users' sockets: multi-device, across instances (a `pulse serve`
process and the in-process server), offsets, recipients only, ephemeral events."""
from __future__ import annotations

import uuid

import pytest

from storage.redis.offset_log import parse_offset

pytestmark = pytest.mark.asyncio(loop_scope="session")


def note(text: str) -> dict:
    return {"notification": {"id": uuid.uuid4().hex, "type": "welcome", "message": text}}


async def test_every_device_of_the_user_gets_the_event_on_either_instance(api, instance_a, instance_b, clients):
    alice = await api.register("rtmd")
    phone = await clients(instance_a.url, alice.token)
    laptop = await clients(instance_b.url, alice.token)
    await instance_a.pusher.push([alice.id], "notification:new", note("hello"))
    offsets = []
    for device in (phone, laptop):
        event, data = await device.next()
        assert event == "notification:new"
        assert data["notification"]["message"] == "hello"
        assert parse_offset(data["offset"]) is not None
        offsets.append(data["offset"])
    assert offsets[0] == offsets[1]  # the offset is the user's, not the socket's


async def test_event_pushed_on_one_instance_reaches_a_socket_on_the_other(api, instance_a, instance_b, clients):
    bob = await api.register("rtx")
    on_b = await clients(instance_b.url, bob.token)
    await instance_a.pusher.push([bob.id], "message:new", {"message": {"id": "m1", "body": "across"}})
    event, data = await on_b.next()
    assert (event, data["message"]["body"]) == ("message:new", "across")


async def test_only_the_recipients_get_the_event(api, instance_a, instance_b, clients):
    carol, dave = await api.register("rtc"), await api.register("rtd")
    carol_socket = await clients(instance_b.url, carol.token)
    dave_socket = await clients(instance_a.url, dave.token)
    await instance_a.pusher.push([carol.id], "notification:new", note("for carol only"))
    await instance_a.pusher.push([dave.id], "notification:new", note("for dave"))
    assert (await carol_socket.next())[1]["notification"]["message"] == "for carol only"
    # Dave's first event is his own: carol's (pushed earlier, same channel order) never came.
    assert (await dave_socket.next())[1]["notification"]["message"] == "for dave"
    assert carol_socket.received.empty()


async def test_offsets_increase_per_user_and_events_arrive_in_order(api, instance_a, instance_b, clients):
    erin = await api.register("rto")
    socket = await clients(instance_b.url, erin.token)
    for i in range(20):
        pusher = instance_a.pusher
        await pusher.push([erin.id], "notification:new", note(f"n{i}"))
    got = [await socket.next() for _ in range(20)]
    assert [d["notification"]["message"] for _, d in got] == [f"n{i}" for i in range(20)]
    offsets = [parse_offset(d["offset"]) for _, d in got]
    assert all(o is not None for o in offsets)
    assert offsets == sorted(offsets) and len(set(offsets)) == 20


async def test_ephemeral_events_carry_no_offset(api, instance_a, instance_b, clients):
    frank, gina = await api.register("rtt"), await api.register("rtg")
    socket = await clients(instance_b.url, frank.token)
    typing = {"conversation_id": "c1", "user_id": gina.id, "typing": True}
    await instance_a.pusher.push([frank.id], "typing", typing, replay=False)
    assert await socket.next() == ("typing", typing)


async def test_a_group_push_gives_each_member_their_own_offset(api, instance_a, instance_b, clients):
    members = [await api.register("rtgrp") for _ in range(3)]
    sockets = [await clients((instance_a, instance_b)[i % 2].url, m.token) for i, m in enumerate(members)]
    # One member already has history: offsets are per user, not shared.
    await instance_a.pusher.push([members[0].id], "notification:new", note("earlier"))
    await sockets[0].next()
    await instance_a.pusher.push([m.id for m in members] + [members[1].id], "message:new", {"message": {"body": "all"}})
    for socket in sockets:
        event, data = await socket.next()
        assert (event, data["message"]["body"]) == ("message:new", "all")
    # The recipient named twice got it once: the next thing it gets is the marker.
    await instance_a.pusher.push([members[1].id], "notification:new", note("marker"))
    event, data = await sockets[1].next()
    assert data["notification"]["message"] == "marker"
