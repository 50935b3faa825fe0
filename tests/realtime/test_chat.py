"""Chat over sockets through MessagingService."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from server import appkeys
from storage.embedded.processes import free_port
from storage.redis.offset_log import START_OF_LOG
from tests.helpers.waiting import eventually
from tests.privacy_helpers import pg, privacy_of

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def direct_conversation(api, a, b) -> str:
    status, body, _ = await api.request("POST", "/conversations", token=a.token, json={"member_ids": [b.id]})
    assert status in (200, 201), body
    return body["id"]


async def test_message_send_acks_the_stored_message_and_reaches_every_member_on_both_instances(
        api, instance_a, instance_b, clients):
    alice, bob, eve = (await api.register("rtchat"), await api.register("rtchat"), await api.register("rtchat"))
    conversation = await direct_conversation(api, alice, bob)
    alice_socket = await clients(instance_a.url, alice.token)
    bob_socket = await clients(instance_b.url, bob.token)
    client_id = uuid.uuid4().hex
    ack = await alice_socket.call("message:send", {"conversation_id": conversation, "body": "hi bob",
                                                   "client_id": client_id})
    assert ack["ok"] is True and ack["message"]["body"] == "hi bob"
    for socket in (alice_socket, bob_socket):  # the sender's sockets too
        data = await socket.next_event("message:new")
        assert data["message"]["id"] == ack["message"]["id"] and data["offset"]
    # A retry with the same client_id is the same message.
    again = await alice_socket.call("message:send", {"conversation_id": conversation, "body": "hi bob",
                                                     "client_id": client_id})
    assert again["ok"] is True and again["message"]["id"] == ack["message"]["id"]
    # A non-member cannot send there.
    eve_socket = await clients(instance_a.url, eve.token)
    denied = await eve_socket.call("message:send", {"conversation_id": conversation, "body": "x", "client_id": "e1"})
    assert denied["ok"] is False and denied["error"]["status"] == 404
    assert eve_socket.sio.connected


async def test_typing_and_read_receipts_go_to_the_other_members(api, instance_a, instance_b, clients):
    alice, bob = await api.register("rttr"), await api.register("rttr")
    conversation = await direct_conversation(api, alice, bob)
    alice_socket = await clients(instance_a.url, alice.token)
    bob_socket = await clients(instance_b.url, bob.token)
    assert await alice_socket.call("typing", {"conversation_id": conversation, "typing": True}) == {"ok": True}
    assert await bob_socket.next_event("typing") == {"conversation_id": conversation, "user_id": alice.id,
                                                     "typing": True}
    ack = await alice_socket.call("message:send", {"conversation_id": conversation, "body": "read me",
                                                   "client_id": uuid.uuid4().hex})
    message_id = ack["message"]["id"]
    await bob_socket.next_event("message:new")
    assert await bob_socket.call("message:read", {"conversation_id": conversation,
                                                  "message_id": message_id}) == {"ok": True}
    receipt = await alice_socket.next_event("message:read")
    assert receipt["user_id"] == bob.id and receipt["message_id"] == message_id and receipt["offset"]
    unknown = await bob_socket.call("typing", {"conversation_id": uuid.uuid4().hex, "typing": True})
    assert unknown["ok"] is False and unknown["error"]["status"] == 404


async def test_message_send_while_mongo_is_down_acks_503_and_keeps_the_socket(api, start_instance, clients):
    alice, bob = await api.register("rtmdown"), await api.register("rtmdown")
    conversation = await direct_conversation(api, alice, bob)
    async with start_instance(mongo_url=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
                              mongo_timeout_ms=300) as broken:
        socket = await clients(broken.url, alice.token)
        ack = await socket.call("message:send", {"conversation_id": conversation, "body": "lost?",
                                                 "client_id": uuid.uuid4().hex})
        assert ack["ok"] is False and ack["error"]["status"] == 503
        assert socket.sio.connected


async def group_conversation(api, creator, *others) -> str:
    status, body, _ = await api.request("POST", "/conversations", token=creator.token,
                                        json={"member_ids": [o.id for o in others]})
    assert status == 201, body
    return body["id"]


async def test_a_sockets_sends_are_stored_and_delivered_in_the_order_it_sent_them(
        api, instance_a, instance_b, clients):
    alice, bob = await api.register("rtord"), await api.register("rtord")
    conversation = await direct_conversation(api, alice, bob)
    alice_socket = await clients(instance_a.url, alice.token)
    bob_socket = await clients(instance_b.url, bob.token)
    # Sent back to back without waiting for acks: they are handled concurrently.
    acks = await asyncio.gather(*(alice_socket.call("message:send", {
        "conversation_id": conversation, "body": f"#{i}", "client_id": f"ord-{i}"}) for i in range(30)))
    assert all(ack["ok"] for ack in acks)
    sent = [ack["message"]["id"] for ack in acks]
    assert [ack["message"]["body"] for ack in acks] == [f"#{i}" for i in range(30)]
    received = [(await bob_socket.next_event("message:new"))["message"]["id"] for _ in range(30)]
    assert received == sent
    status, page, _ = await api.request("GET", f"/conversations/{conversation}/messages?limit=50", token=bob.token)
    assert status == 200 and [m["id"] for m in reversed(page["items"])] == sent


async def test_the_same_send_from_two_sockets_on_two_instances_at_once_is_one_message(
        api, instance_a, instance_b, clients):
    alice, bob = await api.register("rtdup"), await api.register("rtdup")
    conversation = await direct_conversation(api, alice, bob)
    phone, laptop = await clients(instance_a.url, alice.token), await clients(instance_b.url, alice.token)
    bob_socket = await clients(instance_b.url, bob.token)
    send = {"conversation_id": conversation, "body": "only once", "client_id": uuid.uuid4().hex}
    first, second = await asyncio.gather(phone.call("message:send", send), laptop.call("message:send", send))
    assert first["ok"] and second["ok"] and first["message"] == second["message"]
    status, page, _ = await api.request("GET", f"/conversations/{conversation}/messages", token=bob.token)
    assert status == 200 and [m["id"] for m in page["items"]] == [first["message"]["id"]]
    assert (await bob_socket.next_event("message:new"))["message"]["id"] == first["message"]["id"]
    follow_up = await phone.call("message:send", {"conversation_id": conversation, "body": "next",
                                                  "client_id": uuid.uuid4().hex})
    # Nothing else came in between: the duplicate was not pushed again.
    assert (await bob_socket.next_event("message:new"))["message"]["id"] == follow_up["message"]["id"]
    status, conv, _ = await api.request("GET", f"/conversations/{conversation}", token=bob.token)
    assert conv["unread_count"] == 2


async def test_a_member_leaving_on_one_instance_is_seen_by_the_membership_cache_of_another(
        api, server, settings, start_instance, clients):
    """Erasing Bob (on the session's instance) takes him out of the group; the other
    instance, which holds the group's members in its cache, forgets them when that is
    announced on the fan-out channel: its next send goes to Alice and Carol only."""
    alice, bob, carol = [await api.register("rtmem") for _ in range(3)]
    conversation = await group_conversation(api, alice, bob, carol)
    async with start_instance() as other:
        messaging = other.app[appkeys.SERVICES].messaging
        alice_socket = await clients(other.url, alice.token)
        ack = await alice_socket.call("message:send", {"conversation_id": conversation, "body": "all three",
                                                       "client_id": uuid.uuid4().hex})
        assert ack["ok"]
        assert set(messaging.membership.get(conversation).member_ids) == {alice.id, bob.id, carol.id}

        status, body, _ = await api.request("DELETE", "/users/me", token=bob.token, json={"password": bob.password})
        assert status == 202, body
        conn = await pg(settings)
        try:
            await conn.execute("UPDATE users SET purge_after = now() - interval '1 second' WHERE id = $1::uuid",
                               uuid.UUID(bob.id))
        finally:
            await conn.close()
        assert (await privacy_of(server).purge_user(uuid.UUID(bob.id))).status == "completed"

        async def forgotten() -> bool:
            return messaging.membership.get(conversation) is None

        await eventually(forgotten, timeout=10)
        ack = await alice_socket.call("message:send", {"conversation_id": conversation, "body": "two of us",
                                                       "client_id": uuid.uuid4().hex})
        assert ack["ok"]
        assert sorted(await messaging.member_ids(conversation, alice.id)) == sorted([alice.id, carol.id])
        # Nothing was pushed to the erased user: no replay log of his exists again.
        assert await other.pusher.offset_log.read_after(bob.id, START_OF_LOG) == []
