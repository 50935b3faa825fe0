"""The "Real time" section of API.md, payload by payload: exact shapes of acks and of
server events, produced by real actions (REST and socket) on one instance."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.api.test_contract import check_message, check_notification

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def direct(api, a, b) -> str:
    status, body, _ = await api.request("POST", "/conversations", token=a.token, json={"member_ids": [b.id]})
    assert status in (200, 201), body
    return body["id"]


def check_offset(data: dict) -> None:
    assert isinstance(data["offset"], str) and data["offset"], data


async def nothing_more(socket, seconds: float = 0.5) -> list:
    """What else arrives within a short while (for things that must NOT come)."""
    got = []
    try:
        while True:
            got.append(await socket.next(timeout=seconds))
    except asyncio.TimeoutError:
        return got


async def test_message_send_ack_and_message_new_shapes(api, instance_a, clients):
    alice, bob = await api.register("rcma"), await api.register("rcmb")
    conversation = await direct(api, alice, bob)
    a, b = await clients(instance_a.url, alice.token), await clients(instance_a.url, bob.token)
    ack = await a.call("message:send", {"conversation_id": conversation, "body": "hi", "client_id": "s1"})
    assert set(ack) == {"ok", "message"} and ack["ok"] is True
    check_message(ack["message"])
    assert ack["message"]["client_id"] == "s1" and ack["message"]["sender_id"] == alice.id
    for socket in (a, b):
        data = await socket.next_event("message:new")
        assert set(data) == {"offset", "message"}
        check_offset(data)
        assert data["message"] == ack["message"]
    # Errors: {ok: false, error: {status, title}}.
    denied = await a.call("message:send", {"conversation_id": uuid.uuid4().hex, "body": "x", "client_id": "s2"})
    assert set(denied) == {"ok", "error"} and denied["ok"] is False
    assert {"status", "title"} <= set(denied["error"]) and denied["error"]["status"] == 404
    assert isinstance(denied["error"]["title"], str) and denied["error"]["title"]
    # The sender gets no "message" notification for their own message; bob has a socket, so neither.
    assert not [e for e, _ in await nothing_more(a) if e == "notification:new"]


async def test_rest_send_is_delivered_like_a_socket_send(api, instance_a, clients):
    alice, bob = await api.register("rcra"), await api.register("rcrb")
    conversation = await direct(api, alice, bob)
    a, b = await clients(instance_a.url, alice.token), await clients(instance_a.url, bob.token)
    status, sent, _ = await api.request("POST", f"/conversations/{conversation}/messages", token=alice.token,
                                        json={"body": "over rest", "client_id": "r1"})
    assert status == 201
    for socket in (a, b):  # the sender's sockets included
        data = await socket.next_event("message:new")
        assert set(data) == {"offset", "message"} and data["message"] == sent
    # A retry is the same message and is not delivered again.
    status, again, _ = await api.request("POST", f"/conversations/{conversation}/messages", token=alice.token,
                                         json={"body": "over rest", "client_id": "r1"})
    assert status == 200 and again == sent
    assert not [e for e, _ in await nothing_more(b) if e == "message:new"]


async def test_read_and_typing_shapes_go_to_the_others_only(api, instance_a, clients):
    alice, bob = await api.register("rcta"), await api.register("rctb")
    conversation = await direct(api, alice, bob)
    a, b = await clients(instance_a.url, alice.token), await clients(instance_a.url, bob.token)
    assert await a.call("typing", {"conversation_id": conversation, "typing": True}) == {"ok": True}
    assert await b.next_event("typing") == {"conversation_id": conversation, "user_id": alice.id, "typing": True}
    assert await a.call("typing", {"conversation_id": conversation, "typing": False}) == {"ok": True}
    assert await b.next_event("typing") == {"conversation_id": conversation, "user_id": alice.id, "typing": False}
    ack = await a.call("message:send", {"conversation_id": conversation, "body": "r", "client_id": "t1"})
    await b.next_event("message:new")
    await a.next_event("message:new")
    assert await b.call("message:read", {"conversation_id": conversation,
                                         "message_id": ack["message"]["id"]}) == {"ok": True}
    receipt = await a.next_event("message:read")
    assert set(receipt) == {"offset", "conversation_id", "user_id", "message_id"}
    check_offset(receipt)
    assert (receipt["conversation_id"], receipt["user_id"], receipt["message_id"]) == \
        (conversation, bob.id, ack["message"]["id"])
    # Neither typing nor read receipts go back to the one who caused them.
    echoed = [e for e, _ in await nothing_more(b)] + [e for e, _ in await nothing_more(a, 0.1)]
    assert "message:read" not in echoed and "typing" not in echoed, echoed


async def test_typing_is_not_replayed_but_messages_are(api, instance_a, clients):
    alice, bob = await api.register("rcna"), await api.register("rcnb")
    conversation = await direct(api, alice, bob)
    a = await clients(instance_a.url, alice.token)
    b = await clients(instance_a.url, bob.token)
    first = await a.call("message:send", {"conversation_id": conversation, "body": "1", "client_id": "n1"})
    seen = await b.next_event("message:new")
    assert seen["message"]["id"] == first["message"]["id"]
    await b.sio.disconnect()
    assert await a.call("typing", {"conversation_id": conversation, "typing": True}) == {"ok": True}
    missed = await a.call("message:send", {"conversation_id": conversation, "body": "2", "client_id": "n2"})
    again = await clients(instance_a.url, bob.token, offset=seen["offset"])
    event, data = await again.next()
    assert event == "message:new" and data["message"]["id"] == missed["message"]["id"]
    assert "typing" not in [e for e, _ in await nothing_more(again)]


async def test_notification_new_shape(api, instance_a, clients):
    alice, bob = await api.register("rcoa"), await api.register("rcob")
    a = await clients(instance_a.url, alice.token)
    status, _, _ = await api.request("PUT", f"/users/{alice.id}/follow", token=bob.token)
    assert status == 200
    data = await a.next_event("notification:new")
    assert set(data) == {"offset", "notification"}
    check_offset(data)
    check_notification(data["notification"])
    assert data["notification"]["type"] == "follow" and data["notification"]["metadata"]["actor_id"] == bob.id
    assert data["notification"]["read"] is False


async def test_grouped_notification_new_is_coalesced_and_ends_with_the_group_as_it_stands(api, instance_a, clients):
    """v1.1: notification:new for a group at most once per PULSE_NOTIFICATION_PUSH_COALESCE_MS
    (default 1000), carrying the grouped notification as it stands."""
    alice, *fans = [await api.register(f"rcg{i}") for i in range(6)]
    a = await clients(instance_a.url, alice.token)
    status, post, _ = await api.request("POST", "/posts", token=alice.token, json={"body": "viral"})
    assert status == 201
    started = asyncio.get_running_loop().time()
    statuses = await asyncio.gather(*(api.request("PUT", f"/posts/{post['id']}/like", token=f.token) for f in fans))
    assert [s for s, _, _ in statuses] == [200] * len(fans)
    pushes = []
    while not pushes or pushes[-1]["count"] < len(fans):
        data = await a.next_event("notification:new", timeout=15)
        check_offset(data)
        check_notification(data["notification"])
        pushes.append(data["notification"])
    elapsed = asyncio.get_running_loop().time() - started
    pushes += [data["notification"] for event, data in await nothing_more(a, 1.5) if event == "notification:new"]
    assert all(n["group_key"] == pushes[0]["group_key"] and n["id"] == pushes[0]["id"] for n in pushes)
    assert len(pushes) <= elapsed + 2  # at most one per second (and the first at once)
    counts = [n["count"] for n in pushes]
    assert counts == sorted(counts) and counts[-1] == len(fans)
    status, listed, _ = await api.request("GET", "/notifications?limit=100", token=alice.token)
    [group] = [n for n in listed["items"] if n["type"] == "like"]
    assert pushes[-1] == group and set(group["actor_ids"]) <= {f.id for f in fans} and len(group["actor_ids"]) == 3


async def test_message_notification_only_while_the_recipient_has_no_socket(api, instance_a, clients):
    alice, bob = await api.register("rcpa"), await api.register("rcpb")
    conversation = await direct(api, alice, bob)
    a = await clients(instance_a.url, alice.token)
    await a.call("message:send", {"conversation_id": conversation, "body": "offline", "client_id": "p1"})

    async def noted():
        _, body, _ = await api.request("GET", "/notifications", token=bob.token)
        return [n for n in body["items"] if n["type"] == "message"]

    from tests.helpers.waiting import eventually
    (note,) = await eventually(noted, timeout=10, interval=0.1)
    check_notification(note)
    assert note["metadata"]["conversation_id"] == conversation and note["metadata"]["actor_id"] == alice.id
    _, mine, _ = await api.request("GET", "/notifications", token=alice.token)
    assert not [n for n in mine["items"] if n["type"] == "message"]


async def test_presence_query_shape(api, instance_a, clients):
    online, offline = await api.register("rcqa"), await api.register("rcqb")
    socket = await clients(instance_a.url, online.token)
    ack = await socket.call("presence:query", {"user_ids": [online.id, offline.id, str(uuid.uuid4())]})
    assert ack == {"ok": True, "online": [online.id]}
    assert await socket.call("presence:query", {"user_ids": []}) == {"ok": True, "online": []}
