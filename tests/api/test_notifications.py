"""Notifications over REST: list, unread filter and count, mark one (owner only), read all."""
from __future__ import annotations

import uuid

import pytest

from kernel.timefmt import iso, utcnow
from server import appkeys
from server.bus.types import DomainEvent
from tests.helpers.api import is_problem
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")



def event(type_: str, **payload) -> DomainEvent:
    return DomainEvent(id=str(uuid.uuid4()), type=type_, payload=payload, created_at=iso(utcnow()))


async def welcomed(api, prefix: str):
    """A new account, once its welcome notification (from user.registered, through the
    event bus) is there, so later notifications are the only other ones."""
    acct = await api.register(prefix)

    async def has_welcome():
        items = (await api.request("GET", "/notifications", token=acct.token))[1]["items"]
        return [n["type"] for n in items] == ["welcome"]

    await eventually(has_welcome)
    return acct


async def liked(server, author, actor, post_id=None) -> None:
    await server.app[appkeys.SERVICES].notifications.handle(event(
        "post.liked", post_id=post_id or str(uuid.uuid4()), post_author_id=author.id, actor_id=actor.id))


async def test_list_unread_filter_count_and_mark_read(api, server):
    me, fan = await welcomed(api, "nl"), await api.register("nf")
    # Three posts: likes of one post are one (grouped) notification (API.md v1.1).
    post_ids = [str(uuid.uuid4()) for _ in range(3)]
    status, welcome, _ = await api.request("POST", "/notifications/read-all", token=me.token)
    assert status == 200 and welcome == {"updated": 1}
    for post_id in post_ids:
        await liked(server, me, fan, post_id)
    status, listed, _ = await api.request("GET", "/notifications?limit=3", token=me.token)
    assert status == 200 and len(listed["items"]) == 3 and listed["next_cursor"]
    first = listed["items"][0]
    assert first["type"] == "like" and first["read"] is False and first["created_at"].endswith("Z")
    assert first["metadata"] == {"post_id": post_ids[-1], "actor_id": fan.id}
    assert fan.user["display_name"] in first["message"]
    status, count, _ = await api.request("GET", "/notifications/unread-count", token=me.token)
    assert count == {"count": 3}

    status, marked, _ = await api.request("POST", f"/notifications/{first['id']}/read", token=me.token)
    assert status == 200 and marked["id"] == first["id"] and marked["read"] is True
    status, again, _ = await api.request("POST", f"/notifications/{first['id']}/read", token=me.token)
    assert status == 200 and again["read"] is True
    status, unread, _ = await api.request("GET", "/notifications?unread=true", token=me.token)
    assert [n["id"] for n in unread["items"]] == [n["id"] for n in listed["items"][1:]]
    assert (await api.request("GET", "/notifications/unread-count", token=me.token))[1] == {"count": 2}

    status, done, _ = await api.request("POST", "/notifications/read-all", token=me.token)
    assert status == 200 and done == {"updated": 2}
    assert (await api.request("GET", "/notifications/unread-count", token=me.token))[1] == {"count": 0}
    assert (await api.request("POST", "/notifications/read-all", token=me.token))[1] == {"updated": 0}
    status, unread, _ = await api.request("GET", "/notifications?unread=true", token=me.token)
    assert unread["items"] == []


async def test_pagination_newest_first(api, server):
    me, fan = await welcomed(api, "np"), await api.register("np")
    posts = [str(uuid.uuid4()) for _ in range(5)]
    for post in posts:
        await liked(server, me, fan, post)
    seen = []
    cursor = None
    while True:
        path = "/notifications?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await api.request("GET", path, token=me.token)
        assert status == 200 and len(page["items"]) <= 2
        seen += [n["metadata"].get("post_id") for n in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [*posts[::-1], None]  # the welcome came first


async def test_only_the_owner_sees_or_marks_a_notification(api, server):
    owner, fan, other = await welcomed(api, "no"), await api.register("no"), await welcomed(api, "no")
    await liked(server, owner, fan)
    notification = (await api.request("GET", "/notifications", token=owner.token))[1]["items"][0]
    assert notification["type"] == "like"
    is_problem(*await api.request("POST", f"/notifications/{notification['id']}/read", token=other.token), 404)
    assert [n["type"] for n in (await api.request("GET", "/notifications", token=other.token))[1]["items"]] == [
        "welcome"]
    assert (await api.request("POST", "/notifications/read-all", token=other.token))[1] == {"updated": 1}
    status, still, _ = await api.request("GET", "/notifications?unread=true", token=owner.token)
    assert [n["type"] for n in still["items"]] == ["like", "welcome"] and still["items"][0] == notification


async def test_bad_inputs(api):
    me = await api.register("nb")
    for bad in ("nope", "0" * 24, str(uuid.uuid4())):
        is_problem(*await api.request("POST", f"/notifications/{bad}/read", token=me.token), 404)
    for query in ("limit=0", "limit=101", "unread=maybe", "cursor=%%%"):
        is_problem(*await api.request("GET", f"/notifications?{query}", token=me.token), 400)
    for method, path in [("GET", "/notifications"), ("GET", "/notifications/unread-count"),
                         ("POST", "/notifications/read-all"), ("POST", f"/notifications/{'0' * 24}/read")]:
        is_problem(*await api.request(method, path), 401)
        is_problem(*await api.request(method, path, token="not-a-token"), 401)


async def test_domain_events_through_the_bus_notify(api):
    """End to end: REST actions -> outbox -> bus -> notification consumer."""
    author, fan = await welcomed(api, "ba"), await welcomed(api, "bf")
    status, post, _ = await api.request("POST", "/posts", token=author.token, json={"body": "hello"})
    assert status == 201
    assert (await api.request("PUT", f"/posts/{post['id']}/like", token=author.token))[0] == 200  # own: silent
    assert (await api.request("PUT", f"/posts/{post['id']}/like", token=fan.token))[0] == 200
    assert (await api.request("POST", f"/posts/{post['id']}/comments", token=fan.token,
                              json={"body": "nice"}))[0] == 201

    async def arrived():
        items = (await api.request("GET", "/notifications", token=author.token))[1]["items"]
        return items if {n["type"] for n in items} >= {"like", "comment"} else None

    items = await eventually(arrived)
    by_type = {n["type"]: n for n in items}
    assert sorted(n["type"] for n in items) == ["comment", "like", "welcome"]
    assert by_type["like"]["metadata"] == {"post_id": post["id"], "actor_id": fan.id}
    assert by_type["comment"]["metadata"] == {"post_id": post["id"], "actor_id": fan.id}
    assert [n["type"] for n in (await api.request("GET", "/notifications", token=fan.token))[1]["items"]] == [
        "welcome"]
