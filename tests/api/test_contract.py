"""The contract of /work/shared/API.md, statement by statement, with real requests:
resource shapes, list conventions, error format, status codes and the cross-cutting rules."""
from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.helpers.api import is_problem
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
PUBLIC_USER = {"id", "username", "display_name", "bio", "avatar_url", "created_at", "followers_count",
               "following_count", "posts_count"}
USER_REF = {"id", "username", "display_name"}
POST = {"id", "author", "body", "created_at", "like_count", "comment_count", "liked_by_me"}
COMMENT = {"id", "post_id", "author", "body", "created_at"}
EVENT = {"id", "host", "title", "description", "starts_at", "ends_at", "location", "capacity", "going_count",
         "my_rsvp"}
CONVERSATION = {"id", "kind", "title", "member_ids", "created_at", "last_message", "unread_count"}
MESSAGE = {"id", "conversation_id", "sender_id", "body", "client_id", "created_at"}
NOTIFICATION = {"id", "type", "message", "read", "created_at", "metadata"}
# v1.1 "Grouped notifications": a notification may also carry these (all three together).
GROUPED = {"group_key", "count", "actor_ids"}
METADATA = {"post_id", "actor_id", "event_id", "conversation_id"}


def is_iso_z(value) -> bool:
    return isinstance(value, str) and bool(ISO_Z.match(value))


def check_user(user: dict, *, own: bool) -> None:
    assert set(user) == PUBLIC_USER | ({"email"} if own else set()), user
    assert isinstance(user["id"], str) and is_iso_z(user["created_at"])
    assert all(isinstance(user[k], int) for k in ("followers_count", "following_count", "posts_count"))


def check_ref(ref: dict) -> None:
    assert set(ref) == USER_REF and isinstance(ref["id"], str), ref


def check_post(post: dict) -> None:
    assert set(post) == POST, post
    check_ref(post["author"])
    assert isinstance(post["id"], str) and is_iso_z(post["created_at"]) and isinstance(post["liked_by_me"], bool)


def check_comment(comment: dict) -> None:
    assert set(comment) == COMMENT, comment
    check_ref(comment["author"])
    assert isinstance(comment["post_id"], str) and is_iso_z(comment["created_at"])


def check_event(event: dict) -> None:
    assert set(event) == EVENT, event
    check_ref(event["host"])
    assert is_iso_z(event["starts_at"]) and (event["ends_at"] is None or is_iso_z(event["ends_at"]))


def check_message(message: dict) -> None:
    assert set(message) == MESSAGE, message
    assert all(isinstance(message[k], str) for k in MESSAGE) and is_iso_z(message["created_at"])


def check_conversation(conversation: dict) -> None:
    assert set(conversation) == CONVERSATION, conversation
    assert conversation["kind"] in ("direct", "group") and is_iso_z(conversation["created_at"])
    assert all(isinstance(m, str) for m in conversation["member_ids"])
    if conversation["last_message"] is not None:
        check_message(conversation["last_message"])


def check_notification(notification: dict) -> None:
    assert set(notification) in (NOTIFICATION, NOTIFICATION | GROUPED), notification
    if "group_key" in notification:
        assert isinstance(notification["group_key"], str) and notification["group_key"]
        assert isinstance(notification["count"], int) and notification["count"] >= 1
        actor_ids = notification["actor_ids"]
        assert isinstance(actor_ids, list) and len(actor_ids) <= 3 and all(isinstance(a, str) for a in actor_ids)
    assert set(notification["metadata"]) <= METADATA and is_iso_z(notification["created_at"])
    assert isinstance(notification["read"], bool)


def check_list(body: dict) -> list:
    assert set(body) == {"items", "next_cursor"}, body
    assert body["next_cursor"] is None or isinstance(body["next_cursor"], str)
    return body["items"]


async def ok(api, method, path, account, expected=200, json=None):
    status, body, _ = await api.request(method, path, token=account.token, json=json)
    assert status == expected, (method, path, status, body)
    return body


async def all_pages(api, path, account, limit=2) -> list:
    items, cursor = [], None
    for _ in range(50):
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = await ok(api, "GET", url, account)
        got = check_list(page)
        assert len(got) <= limit
        items += got
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination does not end")


def soon(hours: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


# --- users and auth ---------------------------------------------------------------------------

async def test_user_shapes_and_email_only_for_self(api):
    a, b = await api.register("cua"), await api.register("cub")
    check_user(a.user, own=True)
    check_user(await ok(api, "GET", "/users/me", a), own=True)
    check_user(await ok(api, "PATCH", "/users/me", a, json={"bio": "hi"}), own=True)
    for ident in (a.id, a.username, a.username.upper()):
        check_user(await ok(api, "GET", f"/users/{ident}", b), own=False)
    # Even the user themself gets the public shape on the public path.
    check_user(await ok(api, "GET", f"/users/{a.id}", a), own=False)
    login = await ok(api, "POST", "/auth/login", b, json={"login": a.email.upper(), "password": a.password})
    assert set(login) == {"user", "token"} and isinstance(login["token"], str)
    check_user(login["user"], own=True)
    for follower in (await ok(api, "GET", f"/users/{a.id}/followers", a))["items"]:
        check_user(follower, own=False)


async def test_register_rules_and_duplicates(api):
    a = await api.register("cur")
    bad = [
        {"email": "not-an-email", "username": "okname_1", "password": "long enough"},
        {"email": "x1@example.com", "username": "ab", "password": "long enough"},
        {"email": "x2@example.com", "username": "a" * 31, "password": "long enough"},
        {"email": "x3@example.com", "username": "bad-name", "password": "long enough"},
        {"email": "x4@example.com", "username": "okname_2", "password": "short"},
        {"email": "x5@example.com", "username": "okname_3", "password": "p" * 129},
        {"username": "okname_4", "password": "long enough"},
    ]
    for payload in bad:
        status, body, resp = await api.request("POST", "/auth/register", json=payload)
        is_problem(status, body, resp, 400)
        assert body["errors"] and all(set(e) >= {"field", "message"} for e in body["errors"])
    for dup in ({"email": a.email.upper(), "username": f"z{uuid.uuid4().hex[:8]}"},
                {"email": f"z{uuid.uuid4().hex[:8]}@example.com", "username": a.username.upper()}):
        status, body, resp = await api.request("POST", "/auth/register", json={**dup, "password": "long enough"})
        is_problem(status, body, resp, 409)


async def test_logout_revokes_and_401_shapes(api):
    a = await api.register("clo")
    status, body, _ = await api.request("POST", "/auth/logout", token=a.token)
    assert status == 204 and not body
    for token in (a.token, None, "garbage"):
        is_problem(*await api.request("GET", "/users/me", token=token), 401)


async def test_pending_erasure_is_404_to_others_and_cannot_log_in(api):
    a, b = await api.register("cpe"), await api.register("cpo")
    post = await ok(api, "POST", "/posts", a, 201, json={"body": "soon hidden"})
    other_post = await ok(api, "POST", "/posts", b, 201, json={"body": "stays"})
    await ok(api, "POST", f"/posts/{other_post['id']}/comments", a, 201, json={"body": "soon hidden"})
    await ok(api, "PUT", f"/users/{b.id}/follow", a)
    event = await ok(api, "POST", "/events", a, 201, json={"title": "soon hidden", "starts_at": soon(1)})
    body = await ok(api, "DELETE", "/users/me", a, 202, json={"password": a.password})
    assert body["status"] == "pending_erasure" and is_iso_z(body["purge_after"])
    for path in (f"/users/{a.id}", f"/users/{a.username}", f"/users/{a.id}/posts", f"/users/{a.id}/followers",
                 f"/users/{a.id}/following"):
        is_problem(*await api.request("GET", path, token=b.token), 404)
    is_problem(*await api.request("PUT", f"/users/{a.id}/follow", token=b.token), 404)
    # What they made is hidden with them.
    for path in (f"/posts/{post['id']}", f"/events/{event['id']}"):
        is_problem(*await api.request("GET", path, token=b.token), 404)
    assert check_list(await ok(api, "GET", f"/posts/{other_post['id']}/comments", b)) == []
    assert check_list(await ok(api, "GET", f"/users/{b.id}/followers", b)) == []
    is_problem(*await api.request("POST", "/conversations", token=b.token, json={"member_ids": [a.id]}), 400)
    is_problem(*await api.request("POST", "/auth/login", json={"login": a.username, "password": a.password}), 401)
    restored = await ok(api, "POST", "/auth/restore", b, json={"login": a.email, "password": a.password})
    check_user(restored["user"], own=True)
    check_user(await ok(api, "GET", f"/users/{a.id}", b), own=False)


async def test_export_document(api):
    a = await api.register("cex")
    status, body, resp = await api.request("GET", "/users/me/export", token=a.token)
    assert status == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert body["account"]["id"] == a.id and body["account"]["email"] == a.email


# --- posts, comments, likes -----------------------------------------------------------------

async def test_post_comment_like_shapes_and_statuses(api):
    a, b = await api.register("cpa"), await api.register("cpb")
    post = await ok(api, "POST", "/posts", a, 201, json={"body": "hello"})
    check_post(post)
    assert post["author"]["id"] == a.id and post["like_count"] == 0 and post["liked_by_me"] is False
    check_post(await ok(api, "GET", f"/posts/{post['id']}", b))
    # PUT like is idempotent, DELETE too.
    for _ in range(2):
        assert await ok(api, "PUT", f"/posts/{post['id']}/like", b) == {"liked": True, "like_count": 1}
    assert (await ok(api, "GET", f"/posts/{post['id']}", b))["liked_by_me"] is True
    assert (await ok(api, "GET", f"/posts/{post['id']}", a))["liked_by_me"] is False
    for _ in range(2):
        assert await ok(api, "DELETE", f"/posts/{post['id']}/like", b) == {"liked": False, "like_count": 0}
    comments = [await ok(api, "POST", f"/posts/{post['id']}/comments", b, 201, json={"body": f"c{i}"})
                for i in range(3)]
    for c in comments:
        check_comment(c)
        assert c["post_id"] == post["id"]
    listed = await all_pages(api, f"/posts/{post['id']}/comments", a)
    assert [c["id"] for c in listed] == [c["id"] for c in comments]  # oldest first
    assert (await ok(api, "GET", f"/posts/{post['id']}", a))["comment_count"] == 3
    # Comment delete: the post author may, a stranger may not.
    c = await api.register("cpc")
    is_problem(*await api.request("DELETE", f"/comments/{comments[0]['id']}", token=c.token), 403)
    assert (await api.request("DELETE", f"/comments/{comments[0]['id']}", token=a.token))[0] == 204
    assert (await api.request("DELETE", f"/comments/{comments[1]['id']}", token=b.token))[0] == 204
    is_problem(*await api.request("DELETE", f"/posts/{post['id']}", token=b.token), 403)
    assert (await api.request("DELETE", f"/posts/{post['id']}", token=a.token))[0] == 204
    for path in (f"/posts/{post['id']}", f"/posts/{post['id']}/comments", "/posts/not-a-uuid"):
        is_problem(*await api.request("GET", path, token=a.token), 404)
    is_problem(*await api.request("PUT", f"/posts/{post['id']}/like", token=b.token), 404)


async def test_post_and_comment_length_limits(api):
    a = await api.register("cpl")
    for body in ("", "x" * 5001):
        is_problem(*await api.request("POST", "/posts", token=a.token, json={"body": body}), 400)
    assert (await api.request("POST", "/posts", token=a.token, json={"body": "x" * 5000}))[0] == 201
    post = await ok(api, "POST", "/posts", a, 201, json={"body": "p"})
    for body in ("", "x" * 2001):
        is_problem(*await api.request("POST", f"/posts/{post['id']}/comments", token=a.token, json={"body": body}),
                   400)
    assert (await api.request("POST", f"/posts/{post['id']}/comments", token=a.token,
                              json={"body": "x" * 2000}))[0] == 201


async def test_user_posts_newest_first_and_popular(api):
    a = await api.register("cun")
    made = [(await ok(api, "POST", "/posts", a, 201, json={"body": f"p{i}"}))["id"] for i in range(5)]
    listed = await all_pages(api, f"/users/{a.id}/posts", a)
    assert [p["id"] for p in listed] == made[::-1]
    for p in listed:
        check_post(p)
    for p in check_list(await ok(api, "GET", "/posts/popular", a)):
        check_post(p)


# --- social graph and feed ------------------------------------------------------------------

async def test_follow_contract(api):
    a, b = await api.register("cfa"), await api.register("cfb")
    for _ in range(2):
        assert await ok(api, "PUT", f"/users/{b.id}/follow", a) == {"following": True}
    is_problem(*await api.request("PUT", f"/users/{a.id}/follow", token=a.token), 400)
    is_problem(*await api.request("PUT", f"/users/{uuid.uuid4()}/follow", token=a.token), 404)
    followers = check_list(await ok(api, "GET", f"/users/{b.id}/followers", a))
    assert [u["id"] for u in followers] == [a.id]
    check_user(followers[0], own=False)
    following = check_list(await ok(api, "GET", f"/users/{a.id}/following", b))
    assert [u["id"] for u in following] == [b.id]
    for _ in range(2):
        assert await ok(api, "DELETE", f"/users/{b.id}/follow", a) == {"following": False}


async def test_feed_newest_first_own_and_followed(api):
    a, b = await api.register("cda"), await api.register("cdb")
    await ok(api, "PUT", f"/users/{b.id}/follow", a)
    mine = await ok(api, "POST", "/posts", a, 201, json={"body": "mine"})
    theirs = await ok(api, "POST", "/posts", b, 201, json={"body": "theirs"})

    async def both():
        items = check_list(await ok(api, "GET", "/feed", a))
        ids = [p["id"] for p in items]
        return items if {mine["id"], theirs["id"]} <= set(ids) else None

    items = await eventually(both, timeout=10)
    for p in items:
        check_post(p)
    times = [p["created_at"] for p in items]
    assert times == sorted(times, reverse=True)


# --- events -------------------------------------------------------------------------------

async def test_event_contract(api):
    host, guest = await api.register("ceh"), await api.register("ceg")
    early = await ok(api, "POST", "/events", host, 201,
                     json={"title": "Early", "starts_at": soon(1), "ends_at": soon(2), "capacity": 1})
    late = await ok(api, "POST", "/events", host, 201, json={"title": "Late", "starts_at": soon(3)})
    for e in (early, late):
        check_event(e)
    assert late["capacity"] is None and late["description"] is None and late["my_rsvp"] is None
    is_problem(*await api.request("POST", "/events", token=host.token,
                                  json={"title": "Bad", "starts_at": soon(5), "ends_at": soon(4)}), 400)
    is_problem(*await api.request("PATCH", f"/events/{early['id']}", token=host.token,
                                  json={"ends_at": soon(0.5)}), 400)
    is_problem(*await api.request("PATCH", f"/events/{early['id']}", token=guest.token, json={"title": "x"}), 403)
    patched = await ok(api, "PATCH", f"/events/{early['id']}", host, json={"location": "Here"})
    check_event(patched)
    assert patched["location"] == "Here"
    listed = await all_pages(api, f"/events?from={soon(0.5)}&to={soon(4)}", guest)
    ids = [e["id"] for e in listed]
    assert ids.index(early["id"]) < ids.index(late["id"])  # soonest first
    times = [e["starts_at"] for e in listed]
    assert times == sorted(times)
    for _ in range(2):  # PUT is idempotent
        assert await ok(api, "PUT", f"/events/{early['id']}/rsvp", guest, json={"status": "going"}) == \
            {"status": "going", "going_count": 1}
    other = await api.register("ceo")
    is_problem(*await api.request("PUT", f"/events/{early['id']}/rsvp", token=other.token,
                                  json={"status": "going"}), 409)
    is_problem(*await api.request("PUT", f"/events/{early['id']}/rsvp", token=other.token,
                                  json={"status": "maybe"}), 400)
    assert (await ok(api, "GET", f"/events/{early['id']}", guest))["my_rsvp"] == "going"
    attendees = check_list(await ok(api, "GET", f"/events/{early['id']}/attendees", host))
    assert [(x["user"]["id"], x["status"]) for x in attendees] == [(guest.id, "going")]
    assert set(attendees[0]) == {"user", "status"}
    check_user(attendees[0]["user"], own=False)
    assert (await api.request("DELETE", f"/events/{early['id']}/rsvp", token=guest.token))[0] == 204
    is_problem(*await api.request("DELETE", f"/events/{early['id']}", token=guest.token), 403)
    assert (await api.request("DELETE", f"/events/{early['id']}", token=host.token))[0] == 204
    is_problem(*await api.request("GET", f"/events/{early['id']}", token=host.token), 404)


# --- messaging -------------------------------------------------------------------------------

async def test_conversation_and_message_contract(api):
    a, b, c = await api.register("cma"), await api.register("cmb"), await api.register("cmc")
    direct = await ok(api, "POST", "/conversations", a, 201, json={"member_ids": [b.id]})
    check_conversation(direct)
    assert direct["kind"] == "direct" and sorted(direct["member_ids"]) == sorted([a.id, b.id])
    assert (await ok(api, "POST", "/conversations", b, 200, json={"member_ids": [a.id]}))["id"] == direct["id"]
    group = await ok(api, "POST", "/conversations", a, 201, json={"member_ids": [b.id, c.id], "title": "G"})
    check_conversation(group)
    assert group["kind"] == "group" and group["title"] == "G" and len(group["member_ids"]) == 3
    is_problem(*await api.request("POST", "/conversations", token=a.token,
                                  json={"member_ids": [str(uuid.uuid4())]}), 400)
    is_problem(*await api.request("POST", "/conversations", token=a.token, json={"member_ids": ["nope"]}), 400)

    path = f"/conversations/{direct['id']}/messages"
    sent = await ok(api, "POST", path, a, 201, json={"body": "hi", "client_id": "k1"})
    check_message(sent)
    assert sent["client_id"] == "k1" and sent["sender_id"] == a.id and sent["conversation_id"] == direct["id"]
    assert await ok(api, "POST", path, a, 200, json={"body": "hi", "client_id": "k1"}) == sent
    for body in ("", "x" * 4001):
        is_problem(*await api.request("POST", path, token=a.token, json={"body": body, "client_id": "k2"}), 400)
    second = await ok(api, "POST", path, b, 201, json={"body": "x" * 4000, "client_id": "k1"})
    history = await all_pages(api, path, a, limit=1)
    assert [m["id"] for m in history] == [second["id"], sent["id"]]  # newest first
    older = check_list(await ok(api, "GET", f"{path}?before={second['id']}&limit=5", a))
    assert [m["id"] for m in older] == [sent["id"]]
    # Most recent activity first: the group, then a message in the direct conversation.
    await ok(api, "POST", f"/conversations/{group['id']}/messages", c, 201, json={"body": "g", "client_id": "g1"})
    order = [x["id"] for x in await all_pages(api, "/conversations", a, limit=1)]
    assert order.index(group["id"]) < order.index(direct["id"])
    await ok(api, "POST", path, b, 201, json={"body": "again", "client_id": "k3"})
    listed = check_list(await ok(api, "GET", "/conversations", a))
    for conv in listed:
        check_conversation(conv)
    assert [x["id"] for x in listed][:2] == [direct["id"], group["id"]]
    assert listed[0]["unread_count"] == 2
    read = await ok(api, "POST", f"/conversations/{direct['id']}/read", a, json={"message_id": second["id"]})
    assert read == {"conversation_id": direct["id"], "last_read_message_id": second["id"]}
    # Only members see it.
    for method, p, payload in (("GET", f"/conversations/{direct['id']}", None), ("GET", path, None),
                               ("POST", path, {"body": "x", "client_id": "c"}),
                               ("POST", f"/conversations/{direct['id']}/read", {"message_id": sent["id"]})):
        is_problem(*await api.request(method, p, token=c.token, json=payload), 404)


# --- notifications -------------------------------------------------------------------------

async def test_notifications_contract_and_no_self_notify(api):
    a, b = await api.register("cna"), await api.register("cnb")
    welcome = check_list(await ok(api, "GET", "/notifications", a))
    assert [n["type"] for n in welcome] == ["welcome"]
    check_notification(welcome[0])
    # Your own actions never notify yourself.
    own = await ok(api, "POST", "/posts", a, 201, json={"body": "own"})
    await ok(api, "PUT", f"/posts/{own['id']}/like", a)
    await ok(api, "POST", f"/posts/{own['id']}/comments", a, 201, json={"body": "own"})
    ev = await ok(api, "POST", "/events", a, 201, json={"title": "Own", "starts_at": soon(2)})
    await ok(api, "PUT", f"/events/{ev['id']}/rsvp", a, json={"status": "going"})
    # Then b acts: a gets like, comment, follow, rsvp.
    await ok(api, "PUT", f"/posts/{own['id']}/like", b)
    await ok(api, "POST", f"/posts/{own['id']}/comments", b, 201, json={"body": "yo"})
    await ok(api, "PUT", f"/users/{a.id}/follow", b)
    await ok(api, "PUT", f"/events/{ev['id']}/rsvp", b, json={"status": "going"})

    async def arrived():
        items = check_list(await ok(api, "GET", "/notifications?limit=100", a))
        return items if len(items) >= 5 else None

    items = await eventually(arrived, timeout=15)
    await asyncio.sleep(0.5)  # anything self-caused would have come by now too
    items = check_list(await ok(api, "GET", "/notifications?limit=100", a))
    for n in items:
        check_notification(n)
        assert n["metadata"].get("actor_id") in (None, b.id)
    assert sorted(n["type"] for n in items) == ["comment", "follow", "like", "rsvp", "welcome"]
    times = [n["created_at"] for n in items]
    assert times == sorted(times, reverse=True)
    like = next(n for n in items if n["type"] == "like")
    assert like["metadata"] == {"post_id": own["id"], "actor_id": b.id}
    assert (await ok(api, "GET", "/notifications/unread-count", a)) == {"count": 5}
    marked = await ok(api, "POST", f"/notifications/{like['id']}/read", a)
    check_notification(marked)
    assert marked["read"] is True
    unread = check_list(await ok(api, "GET", "/notifications?unread=true", a))
    assert like["id"] not in [n["id"] for n in unread] and len(unread) == 4
    is_problem(*await api.request("POST", f"/notifications/{like['id']}/read", token=b.token), 404)
    assert await ok(api, "POST", "/notifications/read-all", a) == {"updated": 4}
    assert (await ok(api, "GET", "/notifications/unread-count", a)) == {"count": 0}
    # Cancelling the event notifies its attendee, not the host.
    await ok(api, "DELETE", f"/events/{ev['id']}", a, 204)

    async def cancelled():
        got = check_list(await ok(api, "GET", "/notifications", b))
        return [n for n in got if n["type"] == "event_cancelled"]

    (note,) = await eventually(cancelled, timeout=15)
    assert note["metadata"]["event_id"] == ev["id"]
    assert not [n for n in check_list(await ok(api, "GET", "/notifications", a)) if n["type"] == "event_cancelled"]


async def test_grouped_notifications_contract(api):
    """v1.1: likes of one post, comments on it and new followers are one notification per
    target each; its count grows, it moves to the top, it is unread again."""
    a = await api.register("cga")
    fans = [await api.register(f"cgf{i}") for i in range(3)]

    async def notifications(wanted):
        items = check_list(await ok(api, "GET", "/notifications?limit=100", a))
        return items if wanted(items) else None

    def grouped(items, kind):
        return [n for n in items if n["type"] == kind]

    await eventually(lambda: notifications(lambda items: [n["type"] for n in items] == ["welcome"]), timeout=15)
    post = await ok(api, "POST", "/posts", a, 201, json={"body": "group me"})
    await ok(api, "PUT", f"/posts/{post['id']}/like", fans[0])
    await eventually(lambda: notifications(lambda items: items[0]["type"] == "like"), timeout=15)
    await ok(api, "POST", f"/posts/{post['id']}/comments", fans[0], 201, json={"body": "one"})
    await ok(api, "POST", f"/posts/{post['id']}/comments", fans[1], 201, json={"body": "two"})
    for fan in fans[:2]:
        await ok(api, "PUT", f"/users/{a.id}/follow", fan)

    items = await eventually(lambda: notifications(lambda items: len(grouped(items, "like")) == 1 and [
        n["count"] for n in grouped(items, "comment") + grouped(items, "follow")] == [2, 2]), timeout=15)
    for n in items:
        check_notification(n)
    [like] = grouped(items, "like")
    assert like["count"] == 1 and like["actor_ids"] == [fans[0].id] and like["group_key"]
    assert like["metadata"] == {"post_id": post["id"], "actor_id": fans[0].id}
    [comment], [follow] = grouped(items, "comment"), grouped(items, "follow")
    assert set(comment["actor_ids"]) == set(follow["actor_ids"]) == {fans[0].id, fans[1].id}
    assert len({like["group_key"], comment["group_key"], follow["group_key"]}) == 3
    # A group is one notification for the unread count and mark-read.
    assert (await ok(api, "GET", "/notifications/unread-count", a)) == {"count": 4}
    assert await ok(api, "POST", "/notifications/read-all", a) == {"updated": 4}
    assert items[0]["id"] != like["id"]  # (the comments and follows came later)
    # The like group grows: unread again, on top, counted once per person.
    await ok(api, "PUT", f"/posts/{post['id']}/like", fans[1])
    await ok(api, "PUT", f"/posts/{post['id']}/like", fans[2])
    await ok(api, "DELETE", f"/posts/{post['id']}/like", fans[2])
    await ok(api, "PUT", f"/posts/{post['id']}/like", fans[2])
    items = await eventually(lambda: notifications(lambda items: grouped(items, "like")[0]["count"] == 3), timeout=15)
    await asyncio.sleep(0.5)  # a like counted twice would have come by now too
    items = check_list(await ok(api, "GET", "/notifications?limit=100", a))
    assert items[0]["id"] == like["id"] and items[0]["count"] == 3 and items[0]["read"] is False
    assert set(items[0]["actor_ids"]) == {f.id for f in fans} and len(grouped(items, "like")) == 1
    assert (await ok(api, "GET", "/notifications/unread-count", a)) == {"count": 1}
    unread = check_list(await ok(api, "GET", "/notifications?unread=true", a))
    assert [n["id"] for n in unread] == [like["id"]]
    marked = await ok(api, "POST", f"/notifications/{like['id']}/read", a)
    check_notification(marked)
    assert marked["read"] is True and marked["count"] == 3


# --- conventions -----------------------------------------------------------------------------

LIST_PATHS = ["/posts/popular", "/feed", "/events", "/conversations", "/notifications"]


async def test_list_limit_bounds_and_bad_cursor(api):
    a = await api.register("cll")
    for path in LIST_PATHS + [f"/users/{a.id}/posts", f"/users/{a.id}/followers", f"/users/{a.id}/following"]:
        for limit in ("0", "101", "x", "-1"):
            status, body, resp = await api.request("GET", f"{path}?limit={limit}", token=a.token)
            is_problem(status, body, resp, 400)
            assert body["errors"][0]["field"] == "limit", body
        check_list(await ok(api, "GET", f"{path}?limit=100", a))
        check_list(await ok(api, "GET", path, a))
        # A cursor we did not issue is a 400, never a 500.
        for cursor in ("garbage", "Zm9v", "!!!"):
            status, body, resp = await api.request("GET", f"{path}?cursor={cursor}", token=a.token)
            assert status in (200, 400), (path, cursor, status, body)
            if status == 400:
                is_problem(status, body, resp, 400)


async def test_default_limit_is_20(api):
    a = await api.register("cdl")
    for i in range(21):
        await ok(api, "POST", "/posts", a, 201, json={"body": f"p{i}"})
    page = await ok(api, "GET", f"/users/{a.id}/posts", a)
    assert len(check_list(page)) == 20 and page["next_cursor"]
    rest = await ok(api, "GET", f"/users/{a.id}/posts?cursor={page['next_cursor']}", a)
    assert len(check_list(rest)) == 1 and rest["next_cursor"] is None


async def test_error_format_and_codes(api):
    a = await api.register("cer")
    # Malformed JSON, wrong content type, body too large, unknown route, wrong method.
    status, body, resp = await api.request("POST", "/posts", token=a.token, data=b"{nope",
                                           headers={"Content-Type": "application/json"})
    is_problem(status, body, resp, 400)
    is_problem(*await api.request("POST", "/posts", token=a.token, data=b"body=x",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
    is_problem(*await api.request("POST", "/posts", token=a.token, json={"body": "x" * (65 * 1024)}), 413)
    is_problem(*await api.request("GET", "/nowhere", token=a.token), 404)
    status, body, resp = await api.request("DELETE", "/feed", token=a.token)
    is_problem(status, body, resp, 405)
    # Non-object JSON bodies are a validation error, not a crash.
    for payload in ([], "text", 3, None):
        status, body, resp = await api.request("POST", "/posts", token=a.token, data=__import__("orjson").dumps(payload),
                                               headers={"Content-Type": "application/json"})
        is_problem(status, body, resp, 400)
    # Nothing internal leaks out of an error.
    for text in (str(body),):
        assert "Traceback" not in text and "SELECT" not in text and "asyncpg" not in text


async def test_ids_are_strings_everywhere(api):
    a = await api.register("cid")
    post = await ok(api, "POST", "/posts", a, 201, json={"body": "p"})
    assert isinstance(post["id"], str) and isinstance(a.id, str)
    count = await ok(api, "GET", "/notifications/unread-count", a)
    assert set(count) == {"count"} and isinstance(count["count"], int)


async def test_odd_input_is_4xx_never_500(api):
    """Input no store can hold (NUL characters) or no clock can show (dates beyond the
    representable range) is the client's error: 400 in bodies and queries, 404 in paths."""
    a = await api.register("cod")
    for path in ("/users/ab%00c", "/users/ab%00c/posts", "/users/ab%00c/followers", "/posts/a%00"):
        is_problem(*await api.request("GET", path, token=a.token), 404)
    for method, path, payload in (
        ("POST", "/auth/login", {"login": "a\x00b", "password": "long enough\x00"}),
        ("POST", "/auth/register", {"email": "a\x00@b.co", "username": "abc_d", "password": "12345678\x00"}),
        ("POST", "/auth/restore", {"login": "a\x00b", "password": "x"}),
        ("PATCH", "/users/me", {"bio": "a\x00"}),
        ("POST", "/posts", {"body": "a\x00"}),
        ("POST", "/events", {"title": "x\x00", "starts_at": soon(1)}),
        ("POST", "/events", {"title": "x", "starts_at": "0001-01-01T00:00:00+20:00"}),
        ("POST", "/events", {"title": "x", "starts_at": "9999-12-31T23:59:59-20:00"}),
    ):
        status, body, resp = await api.request(method, path, token=a.token, json=payload)
        is_problem(status, body, resp, 400)
        assert body["errors"], body
    for query in ("from=0001-01-01T00:00:00%2B20:00", "to=9999-12-31T23:59:59-20:00", "cursor=%00"):
        is_problem(*await api.request("GET", f"/events?{query}", token=a.token), 400)
    # The earliest representable moment still comes back as ISO 8601 with a four-digit year.
    event = await ok(api, "POST", "/events", a, 201, json={"title": "old", "starts_at": "0001-01-01T00:00:00Z"})
    assert event["starts_at"] == "0001-01-01T00:00:00.000000Z"


async def test_patch_cannot_null_required_fields_and_times_are_strings(api):
    a = await api.register("cpn")
    is_problem(*await api.request("PATCH", "/users/me", token=a.token, json={"display_name": None}), 400)
    event = await ok(api, "POST", "/events", a, 201, json={"title": "t", "starts_at": soon(1)})
    for field in ("title", "starts_at"):
        is_problem(*await api.request("PATCH", f"/events/{event['id']}", token=a.token, json={field: None}), 400)
    is_problem(*await api.request("POST", "/events", token=a.token, json={"title": "t", "starts_at": 0}), 400)
    # Nullable ones clear.
    cleared = await ok(api, "PATCH", f"/events/{event['id']}", a, json={"location": None, "capacity": None})
    assert cleared["location"] is None and cleared["capacity"] is None
