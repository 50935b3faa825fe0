"""Conversations, history, idempotent sends, read positions, unread counts: flows and bad inputs."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.helpers.api import is_problem

pytestmark = pytest.mark.asyncio(loop_scope="session")



async def conversation(api, owner, *others, title=None) -> dict:
    payload = {"member_ids": [o.id for o in others]}
    if title is not None:
        payload["title"] = title
    status, body, _ = await api.request("POST", "/conversations", token=owner.token, json=payload)
    assert status in (200, 201), body
    return body


async def send(api, sender, conversation_id, body="hi", client_id=None) -> tuple[int, dict]:
    status, msg, _ = await api.request("POST", f"/conversations/{conversation_id}/messages", token=sender.token,
                                       json={"body": body, "client_id": client_id or uuid.uuid4().hex})
    return status, msg


async def test_direct_conversation_is_unique_per_pair(api):
    a, b = await api.register("dca"), await api.register("dcb")
    status, first, _ = await api.request("POST", "/conversations", token=a.token, json={"member_ids": [b.id]})
    assert status == 201
    assert first["kind"] == "direct" and sorted(first["member_ids"]) == sorted([a.id, b.id])
    assert first["last_message"] is None and first["unread_count"] == 0 and first["created_at"].endswith("Z")
    # The same pair from either side (and with the creator named too) is the same conversation.
    status, again, _ = await api.request("POST", "/conversations", token=a.token, json={"member_ids": [b.id, a.id]})
    assert status == 200 and again["id"] == first["id"]
    status, other_side, _ = await api.request("POST", "/conversations", token=b.token, json={"member_ids": [a.id]})
    assert status == 200 and other_side["id"] == first["id"]


async def test_concurrent_direct_creation_makes_one_conversation(api):
    a, b = await api.register("cca"), await api.register("ccb")
    results = await asyncio.gather(*(
        api.request("POST", "/conversations", token=(a if i % 2 else b).token,
                    json={"member_ids": [(b if i % 2 else a).id]}) for i in range(6)))
    assert {r[1]["id"] for r in results} == {results[0][1]["id"]}
    assert sorted(r[0] for r in results).count(201) == 1


async def test_group_conversation_with_title(api):
    a, b, c = await api.register("ga"), await api.register("gb"), await api.register("gc")
    status, group, _ = await api.request("POST", "/conversations", token=a.token,
                                         json={"member_ids": [b.id, c.id], "title": "Trip"})
    assert status == 201
    assert group["kind"] == "group" and group["title"] == "Trip"
    assert sorted(group["member_ids"]) == sorted([a.id, b.id, c.id])
    # Groups are not deduplicated: the same members make a new one.
    status, second, _ = await api.request("POST", "/conversations", token=a.token, json={"member_ids": [b.id, c.id]})
    assert status == 201 and second["id"] != group["id"]
    status, seen_by_c, _ = await api.request("GET", f"/conversations/{group['id']}", token=c.token)
    assert status == 200 and seen_by_c["id"] == group["id"]


@pytest.mark.parametrize("payload", [
    {"member_ids": []}, {"member_ids": "x"}, {}, {"member_ids": ["not-a-uuid"]},
    {"member_ids": [str(uuid.uuid4())]}, {"member_ids": [12]}, {"member_ids": [None]},
])
async def test_create_conversation_rejects_bad_members(api, payload):
    a = await api.register("bad")
    is_problem(*await api.request("POST", "/conversations", token=a.token, json=payload), 400)
    status, listed, _ = await api.request("GET", "/conversations", token=a.token)
    assert status == 200 and listed["items"] == []


async def test_conversation_with_only_self_is_rejected(api):
    a = await api.register("self")
    status, body, resp = await api.request("POST", "/conversations", token=a.token, json={"member_ids": [a.id]})
    is_problem(status, body, resp, 400)
    assert body["errors"][0]["field"] == "member_ids"


async def test_members_must_all_exist(api):
    a, b = await api.register("ex"), await api.register("ex")
    status, body, resp = await api.request("POST", "/conversations", token=a.token,
                                           json={"member_ids": [b.id, str(uuid.uuid4())]})
    is_problem(status, body, resp, 400)


async def test_conversation_endpoints_need_auth_and_json(api):
    a, b = await api.register("au"), await api.register("au")
    is_problem(*await api.request("GET", "/conversations"), 401)
    is_problem(*await api.request("POST", "/conversations", json={"member_ids": [b.id]}), 401)
    is_problem(*await api.request("POST", "/conversations", token=a.token, data=b"member_ids",
                                  headers={"Content-Type": "text/plain"}), 415)
    is_problem(*await api.request("POST", "/conversations", token=a.token, data=b"{nope",
                                  headers={"Content-Type": "application/json"}), 400)
    conv = await conversation(api, a, b)
    path = f"/conversations/{conv['id']}/messages"
    is_problem(*await api.request("POST", path, json={"body": "x", "client_id": "k"}), 401)
    is_problem(*await api.request("POST", path, token=a.token, data=b'{"body": "x"}',
                                  headers={"Content-Type": "text/plain"}), 415)
    is_problem(*await api.request("POST", path, token=a.token, json={"body": "x" * 70000, "client_id": "k"}), 413)
    is_problem(*await api.request("POST", f"/conversations/{conv['id']}/read", token=a.token, data=b"[]",
                                  headers={"Content-Type": "application/json"}), 400)
    status, history, _ = await api.request("GET", path, token=a.token)
    assert status == 200 and history["items"] == []


async def test_non_members_get_404_everywhere(api):
    a, b, outsider = await api.register("nm"), await api.register("nm"), await api.register("out")
    conv = await conversation(api, a, b)
    status, msg = await send(api, a, conv["id"])
    assert status == 201
    cid = conv["id"]
    for method, path, body in [
        ("GET", f"/conversations/{cid}", None),
        ("GET", f"/conversations/{cid}/messages", None),
        ("POST", f"/conversations/{cid}/messages", {"body": "intrude", "client_id": "x1"}),
        ("POST", f"/conversations/{cid}/read", {"message_id": msg["id"]}),
    ]:
        is_problem(*await api.request(method, path, token=outsider.token, json=body), 404)
    for bad_id in ("nope", "0" * 24, str(uuid.uuid4())):
        is_problem(*await api.request("GET", f"/conversations/{bad_id}", token=a.token), 404)
    status, history, _ = await api.request("GET", f"/conversations/{cid}/messages", token=a.token)
    assert [m["body"] for m in history["items"]] == ["hi"]
    status, listed, _ = await api.request("GET", "/conversations", token=outsider.token)
    assert listed["items"] == []


async def test_send_and_history_pagination_with_before(api):
    a, b = await api.register("hp"), await api.register("hp")
    conv = await conversation(api, a, b)
    sent = []
    for i in range(7):
        status, msg = await send(api, a if i % 2 else b, conv["id"], body=f"m{i}")
        assert status == 201
        assert msg["conversation_id"] == conv["id"] and msg["body"] == f"m{i}" and msg["created_at"].endswith("Z")
        sent.append(msg)
    status, page1, _ = await api.request("GET", f"/conversations/{conv['id']}/messages?limit=3", token=a.token)
    assert status == 200
    assert [m["body"] for m in page1["items"]] == ["m6", "m5", "m4"]
    assert page1["next_cursor"] == page1["items"][-1]["id"]
    status, page2, _ = await api.request(
        "GET", f"/conversations/{conv['id']}/messages?limit=3&before={page1['next_cursor']}", token=b.token)
    assert [m["body"] for m in page2["items"]] == ["m3", "m2", "m1"]
    status, page3, _ = await api.request(
        "GET", f"/conversations/{conv['id']}/messages?limit=3&cursor={page2['next_cursor']}", token=b.token)
    assert [m["body"] for m in page3["items"]] == ["m0"] and page3["next_cursor"] is None
    assert page1["items"][0] == sent[-1]


async def test_history_rejects_bad_before_and_limit(api):
    a, b = await api.register("hb"), await api.register("hb")
    conv, other = await conversation(api, a, b), await conversation(api, a, await api.register("hb"))
    _, foreign = await send(api, a, other["id"])
    for query in ("before=zzz", f"before={foreign['id']}", "limit=0", "limit=101", "limit=x"):
        is_problem(*await api.request("GET", f"/conversations/{conv['id']}/messages?{query}", token=a.token), 400)


@pytest.mark.parametrize("payload", [
    {"body": "", "client_id": "c"}, {"body": "x" * 4001, "client_id": "c"}, {"client_id": "c"},
    {"body": 5, "client_id": "c"}, {"body": "ok", "client_id": ""}, {"body": "ok", "client_id": "c" * 129},
    {"body": "   ", "client_id": "c"},
])
async def test_send_rejects_bad_messages(api, payload):
    a, b = await api.register("sb"), await api.register("sb")
    conv = await conversation(api, a, b)
    is_problem(*await api.request("POST", f"/conversations/{conv['id']}/messages", token=a.token, json=payload), 400)
    status, history, _ = await api.request("GET", f"/conversations/{conv['id']}/messages", token=a.token)
    assert history["items"] == []


async def test_send_accepts_max_length_body_and_no_client_id(api):
    a, b = await api.register("ml"), await api.register("ml")
    conv = await conversation(api, a, b)
    status, msg = await send(api, a, conv["id"], body="é" * 4000)
    assert status == 201 and len(msg["body"]) == 4000
    status, msg2, _ = await api.request("POST", f"/conversations/{conv['id']}/messages", token=a.token,
                                        json={"body": "no client id"})
    assert status == 201 and msg2["client_id"]


async def test_send_is_idempotent_on_client_id(api):
    a, b = await api.register("id"), await api.register("id")
    conv = await conversation(api, a, b)
    status, first = await send(api, a, conv["id"], body="once", client_id="retry-1")
    assert status == 201
    status, again = await send(api, a, conv["id"], body="once", client_id="retry-1")
    assert status == 200 and again == first
    # The client id is the sender's: another sender may use the same one.
    status, theirs = await send(api, b, conv["id"], body="mine", client_id="retry-1")
    assert status == 201 and theirs["id"] != first["id"]
    status, history, _ = await api.request("GET", f"/conversations/{conv['id']}/messages", token=a.token)
    assert [m["body"] for m in history["items"]] == ["mine", "once"]


async def test_concurrent_retries_store_one_message(api):
    a, b = await api.register("cr"), await api.register("cr")
    conv = await conversation(api, a, b)
    results = await asyncio.gather(*(send(api, a, conv["id"], body="race", client_id="same") for _ in range(8)))
    statuses = sorted(s for s, _ in results)
    assert statuses.count(201) == 1 and statuses.count(200) == 7
    assert len({m["id"] for _, m in results}) == 1
    status, history, _ = await api.request("GET", f"/conversations/{conv['id']}/messages", token=b.token)
    assert len(history["items"]) == 1


async def test_client_id_is_scoped_to_the_conversation(api):
    """Idempotency holds per (conversation, sender, client_id): the unique index must start
    with the messages' shard key (conversationId), the only uniqueness a sharded cluster
    enforces. The same client_id in another conversation is another message; a retry in
    either returns that conversation's own."""
    a, b, c = await api.register("ru"), await api.register("ru"), await api.register("ru")
    one, two = await conversation(api, a, b), await conversation(api, a, c)
    status, first = await send(api, a, one["id"], body="to b", client_id="dup")
    assert status == 201
    status, second = await send(api, a, two["id"], body="to c", client_id="dup")
    assert status == 201 and second["id"] != first["id"]
    for conv, message in ((one, first), (two, second)):
        status, retried = await send(api, a, conv["id"], body="retried", client_id="dup")
        assert status == 200 and retried == message
        status, history, _ = await api.request("GET", f"/conversations/{conv['id']}/messages", token=a.token)
        assert [m["id"] for m in history["items"]] == [message["id"]]


async def test_conversation_list_orders_by_activity_with_last_message_and_unread(api):
    me, x, y, z = [await api.register(prefix) for prefix in ("la", "lx", "ly", "lz")]
    cx, cy, cz = await conversation(api, me, x), await conversation(api, me, y), await conversation(api, me, z)
    await send(api, y, cy["id"], body="from y 1")
    await send(api, x, cx["id"], body="from x")
    await send(api, y, cy["id"], body="from y 2")
    status, page1, _ = await api.request("GET", "/conversations?limit=2", token=me.token)
    assert status == 200
    assert [c["id"] for c in page1["items"]] == [cy["id"], cx["id"]]
    assert page1["items"][0]["last_message"]["body"] == "from y 2" and page1["items"][0]["unread_count"] == 2
    assert page1["items"][1]["unread_count"] == 1
    status, page2, _ = await api.request("GET", f"/conversations?limit=2&cursor={page1['next_cursor']}",
                                         token=me.token)
    assert [c["id"] for c in page2["items"]] == [cz["id"]] and page2["next_cursor"] is None
    assert page2["items"][0]["last_message"] is None
    # The sender's own messages never count as unread for them.
    status, ys_view, _ = await api.request("GET", f"/conversations/{cy['id']}", token=y.token)
    assert ys_view["unread_count"] == 0
    is_problem(*await api.request("GET", "/conversations?cursor=garbage!", token=me.token), 400)


async def test_read_position_is_monotonic_and_drives_unread_count(api):
    a, b = await api.register("rp"), await api.register("rp")
    conv = await conversation(api, a, b)
    msgs = [(await send(api, a, conv["id"], body=f"r{i}"))[1] for i in range(3)]
    status, view, _ = await api.request("GET", f"/conversations/{conv['id']}", token=b.token)
    assert view["unread_count"] == 3
    status, body, _ = await api.request("POST", f"/conversations/{conv['id']}/read", token=b.token,
                                        json={"message_id": msgs[1]["id"]})
    assert status == 200 and body == {"conversation_id": conv["id"], "last_read_message_id": msgs[1]["id"]}
    status, view, _ = await api.request("GET", f"/conversations/{conv['id']}", token=b.token)
    assert view["unread_count"] == 1
    # Never backwards: an older message keeps the later position.
    status, body, _ = await api.request("POST", f"/conversations/{conv['id']}/read", token=b.token,
                                        json={"message_id": msgs[0]["id"]})
    assert status == 200 and body["last_read_message_id"] == msgs[1]["id"]
    status, body, _ = await api.request("POST", f"/conversations/{conv['id']}/read", token=b.token,
                                        json={"message_id": msgs[2]["id"]})
    assert body["last_read_message_id"] == msgs[2]["id"]
    status, view, _ = await api.request("GET", f"/conversations/{conv['id']}", token=b.token)
    assert view["unread_count"] == 0
    # Replying counts as having read: b's reply leaves b with nothing unread.
    await send(api, a, conv["id"], body="r3")
    await send(api, b, conv["id"], body="reply")
    status, view, _ = await api.request("GET", f"/conversations/{conv['id']}", token=b.token)
    assert view["unread_count"] == 0


@pytest.mark.parametrize("payload", [{}, {"message_id": "zz"}, {"message_id": "0" * 24}, {"message_id": 3}])
async def test_read_rejects_unknown_messages(api, payload):
    a, b = await api.register("rb"), await api.register("rb")
    conv = await conversation(api, a, b)
    await send(api, a, conv["id"])
    is_problem(*await api.request("POST", f"/conversations/{conv['id']}/read", token=b.token, json=payload), 400)
    status, view, _ = await api.request("GET", f"/conversations/{conv['id']}", token=b.token)
    assert view["unread_count"] == 1


async def test_mongo_down_answers_503_while_users_work(start_app, api):
    from storage.embedded.processes import free_port

    dead = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    # No workers: this instance must not take (and fail) the shared queues' events.
    async with start_app(mongo_url=dead, mongo_timeout_ms=300, run_workers=False) as down:
        acct = await down.register("md")
        other = await api.register("md")
        for method, path, body in [
            ("GET", "/conversations", None),
            ("POST", "/conversations", {"member_ids": [other.id]}),
            ("GET", "/notifications", None),
            ("GET", "/notifications/unread-count", None),
        ]:
            status, problem, resp = await down.request(method, path, token=acct.token, json=body)
            is_problem(status, problem, resp, 503)
            assert problem["store"] == "mongo" and resp.headers["Retry-After"]
        status, me, _ = await down.request("GET", "/users/me", token=acct.token)
        assert status == 200 and me["id"] == acct.id


async def test_unread_count_is_exact_up_to_the_cap_and_shows_the_cap_beyond(api):
    """Unread counts look at the newest 100 messages (README, "Messaging"): 105 unread,
    from two members sending at once, show 100; reading moves the count exactly."""
    x, y, z = await api.register("ucx"), await api.register("ucy"), await api.register("ucz")
    group = (await api.request("POST", "/conversations", token=x.token, json={"member_ids": [y.id, z.id]}))[1]
    for batch in range(0, 105, 15):
        answers = await asyncio.gather(*(
            api.request("POST", f"/conversations/{group['id']}/messages", token=(x, y)[i % 2].token,
                        json={"body": f"g{i}", "client_id": uuid.uuid4().hex}) for i in range(batch, batch + 15)))
        assert all(status == 201 for status, _, _ in answers), answers

    async def unread() -> int:
        status, body, _ = await api.request("GET", "/conversations", token=z.token)
        assert status == 200, body
        return next(c for c in body["items"] if c["id"] == group["id"])["unread_count"]

    assert await unread() == 100
    history = (await api.request("GET", f"/conversations/{group['id']}/messages?limit=100", token=z.token))[1]
    for index, expected in ((39, 39), (0, 0)):  # the 40th newest, then the newest
        status, body, _ = await api.request("POST", f"/conversations/{group['id']}/read", token=z.token,
                                            json={"message_id": history["items"][index]["id"]})
        assert status == 200, body
        assert await unread() == expected
    await api.request("POST", f"/conversations/{group['id']}/messages", token=y.token,
                      json={"body": "one more", "client_id": uuid.uuid4().hex})
    assert await unread() == 1
