"""Follows: idempotence, counters (also under concurrency), lists, bad input."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
import orjson
import pytest

from tests.helpers.api import is_problem

pytestmark = pytest.mark.asyncio(loop_scope="session")



async def profile(api, viewer, user_id):
    status, body, _ = await api.request("GET", f"/users/{user_id}", token=viewer.token)
    assert status == 200, body
    return body


async def collect(api, token, path, limit):
    seen, cursor = [], None
    while True:
        status, body, _ = await api.request(
            "GET", f"{path}?limit={limit}" + (f"&cursor={cursor}" if cursor else ""), token=token)
        assert status == 200, body
        assert len(body["items"]) <= limit
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


async def test_follow_and_unfollow_are_idempotent_and_counted(api, settings):
    a, b = await api.register("fa"), await api.register("fb")
    # the profile is cached before the follow: the counters must still be fresh after
    await profile(api, a, b.id)
    for _ in range(2):
        status, body, _ = await api.request("PUT", f"/users/{b.id}/follow", token=a.token)
        assert status == 200 and body == {"following": True}
    assert (await profile(api, a, b.id))["followers_count"] == 1
    assert (await profile(api, b, a.id))["following_count"] == 1
    for _ in range(2):
        status, body, _ = await api.request("DELETE", f"/users/{b.id}/follow", token=a.token)
        assert status == 200 and body == {"following": False}
    assert (await profile(api, a, b.id))["followers_count"] == 0
    assert (await profile(api, b, a.id))["following_count"] == 0
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        rows = await conn.fetch("SELECT event_type, payload::text AS payload FROM outbox "
                                "WHERE event_type IN ('user.followed', 'user.unfollowed') "
                                "AND payload->>'follower_id' = $1 ORDER BY created_at", a.id)
    finally:
        await conn.close()
    assert [r["event_type"] for r in rows] == ["user.followed", "user.unfollowed"]  # once each
    assert orjson.loads(rows[0]["payload"]) == {"follower_id": a.id, "followee_id": b.id}


async def test_following_yourself_is_400(api):
    a = await api.register("self")
    status, body, resp = await api.request("PUT", f"/users/{a.id}/follow", token=a.token)
    is_problem(status, body, resp, 400)
    assert body["errors"]
    assert (await profile(api, a, a.id))["following_count"] == 0


async def test_unknown_or_malformed_user_is_404(api):
    a = await api.register("nf")
    for target in (str(uuid.uuid4()), "not-a-uuid"):
        for method, path in (("PUT", "follow"), ("DELETE", "follow"), ("GET", "followers"), ("GET", "following")):
            status, body, resp = await api.request(method, f"/users/{target}/{path}", token=a.token)
            is_problem(status, body, resp, 404)


async def test_follow_needs_a_token(api):
    b = await api.register("tok")
    for method, path in (("PUT", "follow"), ("DELETE", "follow"), ("GET", "followers"), ("GET", "following")):
        status, body, resp = await api.request(method, f"/users/{b.id}/{path}")
        is_problem(status, body, resp, 401)


async def test_lists_paginate_each_exactly_once_newest_first(api):
    star = await api.register("star")
    fans = [await api.register("fan") for _ in range(7)]
    for fan in fans:
        status, _, _ = await api.request("PUT", f"/users/{star.id}/follow", token=fan.token)
        assert status == 200
        await api.request("PUT", f"/users/{fan.id}/follow", token=star.token)
    followers = await collect(api, star.token, f"/users/{star.id}/followers", 3)
    assert [u["id"] for u in followers] == [f.id for f in reversed(fans)]
    following = await collect(api, fans[0].token, f"/users/{star.id}/following", 2)
    assert [u["id"] for u in following] == [f.id for f in reversed(fans)]
    assert followers[0]["username"] == fans[-1].username and "email" not in followers[0]
    assert followers[0]["following_count"] == 1 and followers[0]["followers_count"] == 1


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "cursor=!!!", "cursor=WzFd"])
async def test_lists_reject_bad_query(api, query):
    a = await api.register("lq")
    status, body, resp = await api.request("GET", f"/users/{a.id}/followers?{query}", token=a.token)
    is_problem(status, body, resp, 400)


async def test_users_pending_erasure_are_left_out_and_cannot_be_followed(api, settings):
    star, fan, gone = await api.register("st"), await api.register("fn"), await api.register("gn")
    for acct in (fan, gone):
        await api.request("PUT", f"/users/{star.id}/follow", token=acct.token)
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        await conn.execute("UPDATE users SET status = 'pending_erasure' WHERE id = $1", uuid.UUID(gone.id))
    finally:
        await conn.close()
    followers = await collect(api, star.token, f"/users/{star.id}/followers", 10)
    assert [u["id"] for u in followers] == [fan.id]
    status, body, resp = await api.request("PUT", f"/users/{gone.id}/follow", token=fan.token)
    is_problem(status, body, resp, 404)
    status, body, resp = await api.request("GET", f"/users/{gone.id}/following", token=fan.token)
    is_problem(status, body, resp, 404)


async def test_concurrent_follow_unfollow_keep_counts_exact(api, settings):
    star = await api.register("cc")
    fans = await asyncio.gather(*(api.register("cf") for _ in range(10)))
    calls = []
    for fan in fans:
        for method in ("PUT", "DELETE", "PUT", "PUT", "DELETE"):
            calls.append(api.request(method, f"/users/{star.id}/follow", token=fan.token))
        # and the other way round, in the same burst (counter rows of both sides change)
        calls.append(api.request("PUT", f"/users/{fan.id}/follow", token=star.token))
    results = await asyncio.gather(*calls)
    assert all(status == 200 for status, _, _ in results), [b for s, b, _ in results if s != 200]
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        for user in [star, *fans]:
            uid = uuid.UUID(user.id)
            row = await conn.fetchrow("SELECT followers_count, following_count FROM profiles WHERE user_id = $1", uid)
            followers = await conn.fetchval("SELECT count(*) FROM follows WHERE followee_id = $1", uid)
            following = await conn.fetchval("SELECT count(*) FROM follows WHERE follower_id = $1", uid)
            assert (row["followers_count"], row["following_count"]) == (followers, following)
    finally:
        await conn.close()
    # and what the API shows agrees (the profile cache was invalidated)
    star_profile = await profile(api, fans[0], star.id)
    assert star_profile["following_count"] == 10
