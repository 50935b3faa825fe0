"""Chat over sockets through MessagingService."""
from __future__ import annotations

import uuid

import pytest

from storage.embedded.processes import free_port

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
