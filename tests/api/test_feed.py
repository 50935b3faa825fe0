"""The home feed end to end: fan-out through the event bus, unfollow, deletes,
cold-feed rebuilds, pagination and bad input."""
from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from storage.redis.client import Keys
from tests.helpers.api import is_problem
from tests.helpers.stores import RedisServer
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The contract: a new post appears in followers' feeds within 2 seconds.
FEED_DELAY_SECONDS = 2.0
# Removals (unfollow, delete) and follow back-fills are eventual, with no promised bound.
SETTLE_SECONDS = 10.0



async def post(api, acct, body="hello"):
    status, created, _ = await api.request("POST", "/posts", token=acct.token, json={"body": body})
    assert status == 201, created
    return created


async def feed_ids(api, acct, limit=100):
    status, body, _ = await api.request("GET", f"/feed?limit={limit}", token=acct.token)
    assert status == 200, body
    return [p["id"] for p in body["items"]]


async def follow(api, follower, followee):
    status, body, _ = await api.request("PUT", f"/users/{followee.id}/follow", token=follower.token)
    assert status == 200, body


async def test_new_post_reaches_followers_and_author_within_the_window(api):
    author, fan, stranger = await api.register("au"), await api.register("fa"), await api.register("st")
    await follow(api, fan, author)
    # warm the feeds first, so the post must arrive by fan-out, not by a rebuild
    assert await feed_ids(api, fan) == [] and await feed_ids(api, author) == []
    created = await post(api, author, "fresh news")
    await eventually(lambda: _has(api, fan, created["id"]), timeout=FEED_DELAY_SECONDS)
    await eventually(lambda: _has(api, author, created["id"]), timeout=FEED_DELAY_SECONDS)
    status, body, _ = await api.request("GET", "/feed", token=fan.token)
    item = body["items"][0]
    assert item["id"] == created["id"] and item["body"] == "fresh news"
    assert item["author"]["id"] == author.id and "liked_by_me" in item
    assert created["id"] not in await feed_ids(api, stranger)


async def _has(api, acct, post_id):
    return post_id in await feed_ids(api, acct)


async def test_feed_is_newest_first_and_pages_each_post_once(api):
    author, other, fan = await api.register("pa"), await api.register("pb"), await api.register("pf")
    await follow(api, fan, author)
    await follow(api, fan, other)
    made = []
    for i in range(7):
        made.append((await post(api, (author, other, fan)[i % 3], f"post {i}"))["id"])
    await eventually(lambda: _has_all(api, fan, made), timeout=FEED_DELAY_SECONDS)
    seen, cursor = [], None
    while True:
        status, body, _ = await api.request(
            "GET", "/feed?limit=3" + (f"&cursor={cursor}" if cursor else ""), token=fan.token)
        assert status == 200, body
        assert len(body["items"]) <= 3
        seen += [p["id"] for p in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))


async def _has_all(api, acct, post_ids):
    return set(post_ids) <= set(await feed_ids(api, acct))


async def test_unfollow_removes_the_authors_posts(api):
    author, kept, fan = await api.register("ua"), await api.register("uk"), await api.register("uf")
    await follow(api, fan, author)
    await follow(api, fan, kept)
    dropped = [(await post(api, author))["id"] for _ in range(2)]
    stays = (await post(api, kept))["id"]
    await eventually(lambda: _has_all(api, fan, [*dropped, stays]), timeout=FEED_DELAY_SECONDS)
    status, _, _ = await api.request("DELETE", f"/users/{author.id}/follow", token=fan.token)
    assert status == 200

    async def gone():
        ids = await feed_ids(api, fan)
        return stays in ids and not set(dropped) & set(ids)

    await eventually(gone, timeout=SETTLE_SECONDS)


async def test_follow_brings_in_the_followees_recent_posts(api):
    author, fan = await api.register("fo"), await api.register("fl")
    earlier = (await post(api, author, "before you came"))["id"]
    assert await feed_ids(api, fan) == []  # built, and empty
    await follow(api, fan, author)
    await eventually(lambda: _has(api, fan, earlier), timeout=SETTLE_SECONDS)


async def test_deleted_post_disappears_from_feeds(api):
    author, fan = await api.register("da"), await api.register("df")
    await follow(api, fan, author)
    doomed = (await post(api, author))["id"]
    await eventually(lambda: _has(api, fan, doomed), timeout=FEED_DELAY_SECONDS)
    status, _, _ = await api.request("DELETE", f"/posts/{doomed}", token=author.token)
    assert status == 204
    # at once (the read drops posts that no longer exist) ...
    assert doomed not in await feed_ids(api, fan)
    # ... and out of the stored feed soon after
    await eventually(lambda: _not_stored(api, fan, doomed), timeout=SETTLE_SECONDS)


async def _not_stored(api, acct, post_id):
    return post_id not in await feed_ids(api, acct)


async def test_cold_feed_is_rebuilt_from_postgres(api, settings, redis_url):
    author, fan = await api.register("ca"), await api.register("cf")
    await follow(api, fan, author)
    made = [(await post(api, author, f"c{i}"))["id"] for i in range(3)]
    own = (await post(api, fan, "mine"))["id"]
    await eventually(lambda: _has_all(api, fan, [*made, own]), timeout=FEED_DELAY_SECONDS)
    redis = aioredis.from_url(redis_url)
    try:
        await redis.delete(Keys(settings.namespace).feed(fan.id))  # evicted
    finally:
        await redis.aclose()
    assert await feed_ids(api, fan) == [own, *reversed(made)]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "cursor=garbage!", "cursor=WyJ4IiwieSJd"])
async def test_feed_rejects_bad_query(api, query):
    acct = await api.register("bq")
    status, body, resp = await api.request("GET", f"/feed?{query}", token=acct.token)
    is_problem(status, body, resp, 400)


async def test_feed_needs_a_token(api):
    status, body, resp = await api.request("GET", "/feed")
    is_problem(status, body, resp, 401)


async def test_feed_is_served_from_postgres_while_redis_is_down(start_app, tmp_path):
    redis_server = RedisServer(tmp_path).start()
    try:
        async with start_app(redis_url=redis_server.url, redis_timeout_seconds=0.3) as app_api:
            reader, author = await app_api.register("fdr"), await app_api.register("fda")
            status, _, _ = await app_api.request("PUT", f"/users/{author.id}/follow", token=reader.token)
            assert status == 200
            made = []
            for i in range(3):
                status, post, _ = await app_api.request("POST", "/posts", token=author.token, json={"body": f"p{i}"})
                assert status == 201
                made.append(post["id"])
            newest_first = list(reversed(made))

            async def in_feed() -> bool:
                _, body, _ = await app_api.request("GET", "/feed?limit=10", token=reader.token)
                return [p["id"] for p in body["items"]] == newest_first

            await eventually(in_feed)
            redis_server.stop()
            seen, cursor = [], None
            while True:
                path = "/feed?limit=2" + (f"&cursor={cursor}" if cursor else "")
                status, body, _ = await app_api.request("GET", path, token=reader.token)
                assert status == 200, body
                seen += [p["id"] for p in body["items"]]
                cursor = body["next_cursor"]
                if not cursor:
                    break
            assert seen == newest_first
    finally:
        redis_server.stop()
