"""Posts, comments, likes and the popular list: flows, bad inputs, pagination, concurrency."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from server import appkeys
from storage.redis.client import Keys
from tests.helpers.api import is_problem
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")



async def pg(settings) -> asyncpg.Connection:
    conn = await asyncpg.connect(settings.postgres_dsn)
    await conn.set_type_codec("jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                              schema="pg_catalog")
    return conn


async def new_post(api, acct, body="hello world") -> dict:
    status, post, _ = await api.request("POST", "/posts", token=acct.token, json={"body": body})
    assert status == 201, post
    return post


async def collect_pages(api, path: str, token: str, limit: int) -> list[dict]:
    items, cursor, pages = [], None, 0
    while True:
        url = f"{path}?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        status, body, _ = await api.request("GET", url, token=token)
        assert status == 200, body
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert pages < 100


# --- posts --------------------------------------------------------------------------------

async def test_create_and_get_post(api, settings):
    acct = await api.register("poster")
    post = await new_post(api, acct, "  first post  ")
    assert post["body"] == "first post"
    assert post["author"] == {"id": acct.id, "username": acct.username, "display_name": acct.user["display_name"]}
    assert (post["like_count"], post["comment_count"], post["liked_by_me"]) == (0, 0, False)
    assert post["created_at"].endswith("Z")
    status, got, _ = await api.request("GET", f"/posts/{post['id']}", token=acct.token)
    assert status == 200 and got == post
    status, profile, _ = await api.request("GET", f"/users/{acct.id}", token=acct.token)
    assert profile["posts_count"] == 1
    conn = await pg(settings)
    try:
        payload = await conn.fetchval("SELECT payload FROM outbox WHERE event_type = 'post.created' "
                                      "AND payload->>'post_id' = $1", post["id"])
    finally:
        await conn.close()
    assert payload == {"post_id": post["id"], "author_id": acct.id, "created_at": post["created_at"]}


@pytest.mark.parametrize("payload", [{}, {"body": ""}, {"body": "   "}, {"body": "x" * 5001}, {"body": 5},
                                     {"body": None}, {"text": "hi"}])
async def test_create_post_rejects_bad_bodies(api, settings, payload):
    acct = await api.register("badpost")
    status, body, resp = await api.request("POST", "/posts", token=acct.token, json=payload)
    is_problem(status, body, resp, 400)
    assert any(e["field"] == "body" for e in body["errors"]), body
    status, listing, _ = await api.request("GET", f"/users/{acct.id}/posts", token=acct.token)
    assert listing["items"] == []  # nothing stored
    status, profile, _ = await api.request("GET", f"/users/{acct.id}", token=acct.token)
    assert profile["posts_count"] == 0


async def test_create_post_malformed_json_wrong_type_and_no_token(api):
    acct = await api.register("badjson")
    status, body, resp = await api.request("POST", "/posts", token=acct.token, data=b"{not json",
                                           headers={"Content-Type": "application/json"})
    is_problem(status, body, resp, 400)
    status, body, resp = await api.request("POST", "/posts", token=acct.token, data=b"body=hi",
                                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    is_problem(status, body, resp, 415)
    status, body, resp = await api.request("POST", "/posts", json={"body": "hi"})
    is_problem(status, body, resp, 401)
    status, body, resp = await api.request("POST", "/posts", token="not-a-token", json={"body": "hi"})
    is_problem(status, body, resp, 401)
    status, _, _ = await api.request("POST", "/posts", token=acct.token, json={"body": "x" * 5000})
    assert status == 201  # the limit itself is allowed


@pytest.mark.parametrize("post_id", [str(uuid.uuid4()), "not-a-uuid", "123", "%20"])
async def test_unknown_or_malformed_post_ids_are_404(api, post_id):
    acct = await api.register("nf")
    for method, path in [("GET", f"/posts/{post_id}"), ("DELETE", f"/posts/{post_id}"),
                         ("PUT", f"/posts/{post_id}/like"), ("DELETE", f"/posts/{post_id}/like"),
                         ("GET", f"/posts/{post_id}/comments"), ("DELETE", f"/comments/{post_id}")]:
        status, body, resp = await api.request(method, path, token=acct.token)
        is_problem(status, body, resp, 404)
    status, body, resp = await api.request("POST", f"/posts/{post_id}/comments", token=acct.token,
                                           json={"body": "hi"})
    is_problem(status, body, resp, 404)


async def test_only_the_author_deletes_a_post(api, settings):
    author, other = await api.register("del"), await api.register("delo")
    post = await new_post(api, author)
    status, _, _ = await api.request("POST", f"/posts/{post['id']}/comments", token=other.token, json={"body": "c"})
    assert status == 201
    await api.request("PUT", f"/posts/{post['id']}/like", token=other.token)
    status, body, resp = await api.request("DELETE", f"/posts/{post['id']}", token=other.token)
    is_problem(status, body, resp, 403)
    status, _, _ = await api.request("GET", f"/posts/{post['id']}", token=other.token)
    assert status == 200
    status, _, _ = await api.request("DELETE", f"/posts/{post['id']}", token=author.token)
    assert status == 204
    status, _, _ = await api.request("GET", f"/posts/{post['id']}", token=author.token)
    assert status == 404
    status, _, _ = await api.request("DELETE", f"/posts/{post['id']}", token=author.token)
    assert status == 404
    status, profile, _ = await api.request("GET", f"/users/{author.id}", token=author.token)
    assert profile["posts_count"] == 0
    conn = await pg(settings)
    try:
        pid = uuid.UUID(post["id"])
        assert await conn.fetchval("SELECT count(*) FROM comments WHERE post_id = $1", pid) == 0
        assert await conn.fetchval("SELECT count(*) FROM likes WHERE post_id = $1", pid) == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'post.deleted' "
                                   "AND payload = $1", {"post_id": post["id"], "author_id": author.id}) == 1
    finally:
        await conn.close()


async def test_user_posts_pages_return_each_post_once_newest_first(api):
    acct = await api.register("pager")
    created = [(await new_post(api, acct, f"post {i}"))["id"] for i in range(23)]
    items = await collect_pages(api, f"/users/{acct.id}/posts", acct.token, 5)
    assert [p["id"] for p in items] == list(reversed(created))
    by_name = await collect_pages(api, f"/users/{acct.username}/posts", acct.token, 100)
    assert [p["id"] for p in by_name] == list(reversed(created))
    # A post added while paging does not shift the later pages.
    status, first, _ = await api.request("GET", f"/users/{acct.id}/posts?limit=10", token=acct.token)
    await new_post(api, acct, "late")
    status, second, _ = await api.request("GET", f"/users/{acct.id}/posts?limit=10&cursor={first['next_cursor']}",
                                          token=acct.token)
    assert [p["id"] for p in first["items"] + second["items"]] == list(reversed(created))[:20]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "cursor=garbage!!",
                                   "cursor=WyJ4Il0", "cursor=" + "A" * 600])
async def test_list_rejects_bad_limits_and_cursors(api, query):
    acct = await api.register("q")
    post = await new_post(api, acct)
    for path in (f"/users/{acct.id}/posts", f"/posts/{post['id']}/comments", "/posts/popular"):
        status, body, resp = await api.request("GET", f"{path}?{query}", token=acct.token)
        is_problem(status, body, resp, 400)
        assert body["errors"], body


async def test_posts_of_unknown_user_are_404(api):
    acct = await api.register("unk")
    for who in (str(uuid.uuid4()), "no_such_user_xyz"):
        status, body, resp = await api.request("GET", f"/users/{who}/posts", token=acct.token)
        is_problem(status, body, resp, 404)


# --- likes ----------------------------------------------------------------------------------

async def test_like_is_idempotent_and_shows_liked_by_me(api, settings):
    author, fan = await api.register("la"), await api.register("lf")
    post = await new_post(api, author)
    for _ in range(2):
        status, body, _ = await api.request("PUT", f"/posts/{post['id']}/like", token=fan.token)
        assert status == 200 and body == {"liked": True, "like_count": 1}
    _, seen_by_fan, _ = await api.request("GET", f"/posts/{post['id']}", token=fan.token)
    _, seen_by_author, _ = await api.request("GET", f"/posts/{post['id']}", token=author.token)
    assert seen_by_fan["liked_by_me"] is True and seen_by_fan["like_count"] == 1
    assert seen_by_author["liked_by_me"] is False
    for _ in range(2):
        status, body, _ = await api.request("DELETE", f"/posts/{post['id']}/like", token=fan.token)
        assert status == 200 and body == {"liked": False, "like_count": 0}
    conn = await pg(settings)
    try:
        kinds = await conn.fetch("SELECT event_type, payload FROM outbox WHERE payload->>'post_id' = $1 "
                                 "AND event_type IN ('post.liked', 'post.unliked') ORDER BY created_at", post["id"])
    finally:
        await conn.close()
    assert [k["event_type"] for k in kinds] == ["post.liked", "post.unliked"]
    assert kinds[0]["payload"] == {"post_id": post["id"], "post_author_id": author.id, "actor_id": fan.id}


async def test_like_counts_stay_exact_under_concurrency(api, settings):
    author = await api.register("hot")
    post = await new_post(api, author)
    fans = await asyncio.gather(*(api.register("fan") for _ in range(50)))
    results = await asyncio.gather(*(api.request("PUT", f"/posts/{post['id']}/like", token=f.token) for f in fans))
    assert all(status == 200 for status, _, _ in results)
    _, got, _ = await api.request("GET", f"/posts/{post['id']}", token=author.token)
    assert got["like_count"] == 50
    # Likes and unlikes of the same post racing each other, several per user.
    ops = []
    for i, fan in enumerate(fans):
        ops.append(("DELETE", fan))
        if i % 2:
            ops.append(("PUT", fan))
        if i % 3 == 0:
            ops.append(("DELETE", fan))
    results = await asyncio.gather(*(api.request(m, f"/posts/{post['id']}/like", token=f.token) for m, f in ops))
    assert all(status == 200 for status, _, _ in results)
    conn = await pg(settings)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM likes WHERE post_id = $1", uuid.UUID(post["id"]))
    finally:
        await conn.close()
    _, got, _ = await api.request("GET", f"/posts/{post['id']}", token=author.token)
    assert got["like_count"] == rows


# --- comments ------------------------------------------------------------------------------

async def test_comments_flow_oldest_first_with_pages(api, settings):
    author, commenter = await api.register("ca"), await api.register("cc")
    post = await new_post(api, author)
    made = []
    for i in range(12):
        status, comment, _ = await api.request("POST", f"/posts/{post['id']}/comments", token=commenter.token,
                                               json={"body": f"comment {i}"})
        assert status == 201, comment
        made.append(comment)
    assert made[0]["post_id"] == post["id"] and made[0]["author"]["id"] == commenter.id
    assert made[0]["body"] == "comment 0" and made[0]["created_at"].endswith("Z")
    items = await collect_pages(api, f"/posts/{post['id']}/comments", author.token, 5)
    assert [c["id"] for c in items] == [c["id"] for c in made]
    _, got, _ = await api.request("GET", f"/posts/{post['id']}", token=author.token)
    assert got["comment_count"] == 12
    conn = await pg(settings)
    try:
        payload = await conn.fetchval("SELECT payload FROM outbox WHERE event_type = 'comment.created' "
                                      "AND payload->>'comment_id' = $1", made[0]["id"])
    finally:
        await conn.close()
    assert payload == {"comment_id": made[0]["id"], "post_id": post["id"], "post_author_id": author.id,
                       "actor_id": commenter.id}


@pytest.mark.parametrize("payload", [{}, {"body": ""}, {"body": " \n "}, {"body": "y" * 2001}, {"body": []}])
async def test_bad_comments_are_400_and_not_stored(api, payload):
    acct = await api.register("bc")
    post = await new_post(api, acct)
    status, body, resp = await api.request("POST", f"/posts/{post['id']}/comments", token=acct.token, json=payload)
    is_problem(status, body, resp, 400)
    _, got, _ = await api.request("GET", f"/posts/{post['id']}", token=acct.token)
    assert got["comment_count"] == 0


async def test_comment_delete_by_comment_author_or_post_author_only(api):
    author, commenter, stranger = await api.register("pa"), await api.register("pc"), await api.register("ps")
    post = await new_post(api, author)
    ids = []
    for _ in range(2):
        _, comment, _ = await api.request("POST", f"/posts/{post['id']}/comments", token=commenter.token,
                                          json={"body": "mine"})
        ids.append(comment["id"])
    status, body, resp = await api.request("DELETE", f"/comments/{ids[0]}", token=stranger.token)
    is_problem(status, body, resp, 403)
    status, _, _ = await api.request("DELETE", f"/comments/{ids[0]}", token=commenter.token)
    assert status == 204
    status, _, _ = await api.request("DELETE", f"/comments/{ids[1]}", token=author.token)
    assert status == 204
    status, _, _ = await api.request("DELETE", f"/comments/{ids[1]}", token=author.token)
    assert status == 404
    _, got, _ = await api.request("GET", f"/posts/{post['id']}", token=author.token)
    assert got["comment_count"] == 0
    _, listing, _ = await api.request("GET", f"/posts/{post['id']}/comments", token=author.token)
    assert listing == {"items": [], "next_cursor": None}


# --- visibility, get_many, popular ------------------------------------------------------------

async def test_posts_of_users_pending_erasure_are_hidden(api, settings, server):
    author, viewer = await api.register("gone"), await api.register("gv")
    post = await new_post(api, author)
    conn = await pg(settings)
    try:
        await conn.execute("UPDATE users SET status = 'pending_erasure' WHERE id = $1", uuid.UUID(author.id))
        await server.app[appkeys.SERVICES].users.invalidate_profiles(author.id)
        status, _, _ = await api.request("GET", f"/posts/{post['id']}", token=viewer.token)
        assert status == 404
        status, _, _ = await api.request("GET", f"/users/{author.id}/posts", token=viewer.token)
        assert status == 404
        status, _, _ = await api.request("PUT", f"/posts/{post['id']}/like", token=viewer.token)
        assert status == 404
        posts = server.app[appkeys.SERVICES].posts
        assert await posts.get_many(viewer.id, [post["id"]]) == []
    finally:
        await conn.execute("UPDATE users SET status = 'active' WHERE id = $1", uuid.UUID(author.id))
        await conn.close()
    status, _, _ = await api.request("GET", f"/posts/{post['id']}", token=viewer.token)
    assert status == 200


async def test_get_many_keeps_the_order_given_and_skips_unknown_ids(api, server):
    acct = await api.register("many")
    posts = [await new_post(api, acct, f"p{i}") for i in range(4)]
    await api.request("PUT", f"/posts/{posts[2]['id']}/like", token=acct.token)
    wanted = [posts[2]["id"], str(uuid.uuid4()), posts[0]["id"], "junk", posts[3]["id"]]
    got = await server.app[appkeys.SERVICES].posts.get_many(acct.id, wanted)
    assert [p["id"] for p in got] == [posts[2]["id"], posts[0]["id"], posts[3]["id"]]
    assert got[0]["liked_by_me"] is True and got[1]["liked_by_me"] is False


async def test_recent_ids_by_authors_newest_first(api, server):
    a, b = await api.register("ra"), await api.register("rb")
    made = [await new_post(api, a, "a1"), await new_post(api, b, "b1"), await new_post(api, a, "a2")]
    posts = server.app[appkeys.SERVICES].posts
    got = await posts.recent_ids_by_authors([a.id, b.id, "junk"], 10)
    assert [(pid, author) for pid, author, _ in got] == [(made[2]["id"], a.id), (made[1]["id"], b.id),
                                                          (made[0]["id"], a.id)]
    assert [pid for pid, _, _ in await posts.recent_ids_by_authors([a.id], 1)] == [made[2]["id"]]


async def test_popular_ranks_recent_posts_by_likes_as_likes_arrive(api, settings):
    author = await api.register("pop")
    fans = await asyncio.gather(*(api.register("pf") for _ in range(4)))
    posts = [await new_post(api, author, f"pop {i}") for i in range(3)]
    # posts[1] gets 4 likes, posts[0] 2, posts[2] 3 then all taken back.
    for fan in fans:
        await api.request("PUT", f"/posts/{posts[1]['id']}/like", token=fan.token)
    for fan in fans[:2]:
        await api.request("PUT", f"/posts/{posts[0]['id']}/like", token=fan.token)
    for fan in fans[:3]:
        await api.request("PUT", f"/posts/{posts[2]['id']}/like", token=fan.token)
    for fan in fans[:3]:
        await api.request("DELETE", f"/posts/{posts[2]['id']}/like", token=fan.token)
    mine = {p["id"] for p in posts}

    async def ranking():
        _, body, _ = await api.request("GET", "/posts/popular?limit=100", token=fans[0].token)
        ranked = [(p["id"], p["like_count"]) for p in body["items"] if p["id"] in mine]
        return ranked if ranked == [(posts[1]["id"], 4), (posts[0]["id"], 2)] else None

    await eventually(ranking)
    _, body, _ = await api.request("GET", "/posts/popular?limit=100", token=fans[0].token)
    ours = [p for p in body["items"] if p["id"] == posts[1]["id"]]
    assert ours[0]["liked_by_me"] is True
    # Pages of the ranking hold each post once.
    everything = await collect_pages(api, "/posts/popular", fans[0].token, 1)
    assert [p["id"] for p in everything] == [p["id"] for p in body["items"]]
    # A deleted post leaves the ranking.
    status, _, _ = await api.request("DELETE", f"/posts/{posts[0]['id']}", token=author.token)
    assert status == 204

    async def gone():
        _, body, _ = await api.request("GET", "/posts/popular?limit=100", token=fans[0].token)
        return [p["id"] for p in body["items"] if p["id"] in mine] == [posts[1]["id"]]

    await eventually(gone)


async def test_popular_is_rebuilt_from_postgres_when_redis_lost_it(api, settings):
    author, fan = await api.register("cold"), await api.register("cf")
    post = await new_post(api, author)
    await api.request("PUT", f"/posts/{post['id']}/like", token=fan.token)
    redis = aioredis.from_url(settings.redis_url)
    keys = Keys(settings.namespace)
    try:
        await redis.delete(keys.popular_posts(), keys.popular_posts_born(), keys.popular_posts_fresh())
    finally:
        await redis.aclose()
    status, body, _ = await api.request("GET", "/posts/popular?limit=100", token=fan.token)
    assert status == 200
    assert post["id"] in [p["id"] for p in body["items"]]


async def test_popular_route_is_not_taken_for_a_post_id(api):
    acct = await api.register("route")
    status, body, _ = await api.request("GET", "/posts/popular", token=acct.token)
    assert status == 200 and set(body) == {"items", "next_cursor"}
    status, body, resp = await api.request("GET", "/posts/popular")
    is_problem(status, body, resp, 401)
