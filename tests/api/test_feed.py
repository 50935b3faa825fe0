"""The home feed end to end: fan-out through the event bus, unfollow, deletes,
cold-feed rebuilds, pagination and bad input; the hybrid fan-out of large accounts
(threshold crossings, merged pages and cursors, removals, lost Redis structures)."""
from __future__ import annotations

import uuid

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from server import appkeys
from storage.redis.client import Keys
from tests.helpers.api import is_problem
from tests.helpers.app import own_namespaces
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


# --- hybrid fan-out: large accounts merged in when read ---------------------------------
#
# An instance of its own (events in their own vhost, keys in their own namespace) whose
# threshold is 3 followers, back to push at 1: a fourth follower makes an author large.

PUSH_MAX, RESUME = 3, 1


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hybrid(start_app, make_amqp_vhost, make_pg_database):
    # A database of its own too: another app's relay must not publish this app's outbox.
    async with start_app(fanout_push_max_followers=PUSH_MAX, fanout_push_resume_followers=RESUME,
                         postgres_dsn=make_pg_database(f"_hybrid_{uuid.uuid4().hex[:6]}"),
                         **own_namespaces(make_amqp_vhost, "hybrid")) as app_api:
        yield app_api


class Inspect:
    """What the stores hold, read directly: the order PostgreSQL gives, modes, Redis sets."""

    def __init__(self, app_api, redis_url):
        self.api = app_api
        self.settings = app_api.app[appkeys.SETTINGS]
        self.keys = Keys(self.settings.namespace)
        self.redis = aioredis.from_url(redis_url)

    @property
    def feed(self):
        return self.api.app[appkeys.SERVICES].feed

    async def pg(self, query, *args):
        conn = await asyncpg.connect(self.settings.postgres_dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def expected_feed(self, acct) -> list[str]:
        """The feed as PostgreSQL orders it: posts of the followed and their own, newest
        first, ties by ``author_id:post_id`` in byte order."""
        rows = await self.pg(
            "SELECT p.id FROM posts p JOIN users u ON u.id = p.author_id AND u.status = 'active' "
            "WHERE p.author_id = $1 OR p.author_id IN (SELECT followee_id FROM follows WHERE follower_id = $1) "
            "ORDER BY p.created_at DESC, (p.author_id::text || ':' || p.id::text) COLLATE \"C\" DESC",
            uuid.UUID(acct.id))
        return [str(r["id"]) for r in rows]

    async def mode(self, author) -> str | None:
        rows = await self.pg("SELECT mode FROM feed_fanout_modes WHERE author_id = $1", uuid.UUID(author.id))
        return rows[0]["mode"] if rows else None

    async def pushed(self, acct) -> set[str]:
        """Post ids in the reader's own (pushed) feed in Redis."""
        return {m.decode().partition(":")[2] for m in await self.redis.zrange(self.keys.feed(acct.id), 0, -1)
                if not m.startswith(b"~")}

    async def in_author_feed(self, author) -> set[str]:
        return {m.decode().partition(":")[2] for m in await self.redis.zrange(self.keys.author_feed(author.id), 0, -1)
                if not m.startswith(b"~")}

    async def merged_authors(self, acct) -> set[str]:
        return {m.decode() for m in await self.redis.smembers(self.keys.merged_authors(acct.id))
                if not m.startswith(b"~")}


@pytest_asyncio.fixture(loop_scope="session")
async def inspect(hybrid, redis_url):
    probe = Inspect(hybrid, redis_url)
    yield probe
    await probe.redis.aclose()


async def paged_ids(api, acct, limit) -> list[str]:
    seen, cursor = [], None
    while True:
        status, body, _ = await api.request(
            "GET", f"/feed?limit={limit}" + (f"&cursor={cursor}" if cursor else ""), token=acct.token)
        assert status == 200, body
        assert len(body["items"]) <= limit
        seen += [p["id"] for p in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


async def exact(api, inspect, acct) -> bool:
    """The feed, paged, is what PostgreSQL says: every post once, in order, none missing."""
    return await paged_ids(api, acct, 3) == await inspect.expected_feed(acct)


async def large_author(api, inspect, prefix, followers):
    """An author followed by ``followers`` (more than PUSH_MAX), once no longer pushed."""
    author = await api.register(prefix)
    for fan in followers:
        await follow(api, fan, author)
    await eventually(lambda: _mode_is(inspect, author, "pull"), timeout=SETTLE_SECONDS)
    return author


async def _mode_is(inspect, author, mode):
    return await inspect.mode(author) == mode


async def test_crossing_above_the_threshold_stops_pushing_and_no_feed_gains_a_gap_or_a_duplicate(hybrid, inspect):
    api = hybrid
    author, fans = await api.register("xa"), [await api.register(f"x{i}") for i in range(PUSH_MAX + 1)]
    for fan in fans:
        assert await feed_ids(api, fan) == []  # built: what arrives comes by fan-out or merge
    for fan in fans[:PUSH_MAX]:
        await follow(api, fan, author)
    before = [(await post(api, author, f"small {i}"))["id"] for i in range(2)]
    for fan in fans[:PUSH_MAX]:
        await eventually(lambda: _has_all(api, fan, before), timeout=FEED_DELAY_SECONDS)
    assert await inspect.feed.settle_fanout_mode(author.id) is None  # 3 followers: not more than 3
    await follow(api, fans[PUSH_MAX], author)
    await eventually(lambda: _mode_is(inspect, author, "pull"), timeout=SETTLE_SECONDS)
    after = (await post(api, author, "large now"))["id"]
    for fan in fans:
        await eventually(lambda: _has(api, fan, after), timeout=FEED_DELAY_SECONDS)
    for fan in fans:
        assert await exact(api, inspect, fan)
        assert author.id in await inspect.merged_authors(fan)
        assert after not in await inspect.pushed(fan)  # merged when read, never pushed
    # Already pushed entries stay in the first followers' feeds and are read once.
    assert set(before) <= await inspect.pushed(fans[0])
    assert {after, *before} <= await inspect.in_author_feed(author)
    assert after in await inspect.pushed(author)  # the author's own feed is still pushed


async def test_crossing_back_resumes_push_with_hysteresis_and_back_fills_so_nothing_disappears(hybrid, inspect):
    api = hybrid
    fans = [await api.register(f"y{i}") for i in range(PUSH_MAX + 1)]
    for fan in fans:
        assert await feed_ids(api, fan) == []
    author = await large_author(api, inspect, "ya", fans)
    during = [(await post(api, author, f"merged {i}"))["id"] for i in range(3)]
    for fan in fans:
        await eventually(lambda: _has_all(api, fan, during), timeout=FEED_DELAY_SECONDS)
        assert not set(during) & await inspect.pushed(fan)
    # Down to 3 (the maximum) and 2: above the resume level, still merged.
    for fan in fans[2:]:
        status, _, _ = await api.request("DELETE", f"/users/{author.id}/follow", token=fan.token)
        assert status == 200
    await eventually(lambda: _lacks_all(api, fans[3], during), timeout=SETTLE_SECONDS)
    assert await inspect.feed.settle_fanout_mode(author.id) == "pull"
    # Down to 1: pushed again; the remaining follower's feed holds the posts made
    # meanwhile, and nobody merges the author any more.
    status, _, _ = await api.request("DELETE", f"/users/{author.id}/follow", token=fans[1].token)
    assert status == 200
    await eventually(lambda: _mode_is(inspect, author, None), timeout=SETTLE_SECONDS)
    assert set(during) <= await inspect.pushed(fans[0])
    assert author.id not in await inspect.merged_authors(fans[0])
    assert await inspect.in_author_feed(author) == set()
    assert await exact(api, inspect, fans[0])
    pushed_again = (await post(api, author, "pushed again"))["id"]
    await eventually(lambda: _has(api, fans[0], pushed_again), timeout=FEED_DELAY_SECONDS)
    assert pushed_again in await inspect.pushed(fans[0])
    for fan in fans[1:]:
        await eventually(lambda: _lacks_all(api, fan, [*during, pushed_again]), timeout=SETTLE_SECONDS)
        assert await exact(api, inspect, fan)


async def _lacks_all(api, acct, post_ids):
    return not set(post_ids) & set(await feed_ids(api, acct))


async def test_erasing_followers_brings_a_large_author_back_under_the_threshold(hybrid, inspect):
    api = hybrid
    fans = [await api.register(f"z{i}") for i in range(PUSH_MAX + 1)]
    author = await large_author(api, inspect, "za", fans)
    merged = (await post(api, author, "before the erasures"))["id"]
    await eventually(lambda: _has(api, fans[0], merged), timeout=FEED_DELAY_SECONDS)
    privacy = api.app[appkeys.SERVICES].privacy
    for fan in fans[1:]:
        await privacy.purge_now(fan.id)
    assert await inspect.mode(author) is None  # the purge's feed.fanout_modes step
    assert merged in await inspect.pushed(fans[0])
    assert await exact(api, inspect, fans[0])


async def test_a_feed_mixing_pushed_and_merged_posts_pages_in_postgresql_order_ties_included(hybrid, inspect):
    api = hybrid
    reader = await api.register("mr")
    assert await feed_ids(api, reader) == []  # built now: later posts come by fan-out or merge
    small = [await api.register(f"ms{i}") for i in range(2)]
    large = [await large_author(api, inspect, f"ml{i}", [reader, *[await api.register(f"mf{i}{j}")
                                                                     for j in range(PUSH_MAX)]])
             for i in range(2)]
    for author in small:
        await follow(api, reader, author)
    made = []
    for i in range(8):
        made.append((await post(api, (large[0], small[0], large[1], small[1], reader)[i % 5], f"mix {i}"))["id"])
    await eventually(lambda: _has_all(api, reader, made), timeout=FEED_DELAY_SECONDS)
    merged = {p for p in made if p not in await inspect.pushed(reader)}
    assert merged and merged < set(made)  # both sources in play
    for limit in (1, 2, 3, 100):
        assert await paged_ids(api, reader, limit) == await inspect.expected_feed(reader)
    # Posts with one timestamp from both pushed and both merged authors (a bulk import or
    # a coarse clock makes them): the keyset cursor breaks the tie by member across the
    # sources. The small authors' ones put into the reader's feed as fan-out would, the
    # large ones read from PostgreSQL into their author feeds, dropped for the purpose.
    moment = (await inspect.pg("SELECT now() - interval '1 hour' AS t"))[0]["t"]
    tied = []
    for author in (small[0], large[0], large[1], small[1]):
        post_id = uuid.uuid4()
        await inspect.pg("INSERT INTO posts (id, author_id, body, created_at) VALUES ($1, $2, 'tied', $3)",
                         post_id, uuid.UUID(author.id), moment)
        tied.append(str(post_id))
        if author in small:
            await inspect.feed.store.merge(reader.id, [(author.id, str(post_id), moment.timestamp())], built=False)
    await inspect.redis.delete(*(inspect.keys.author_feed(a.id) for a in large))
    expected = await inspect.expected_feed(reader)
    assert set(tied) <= set(expected)
    for limit in (1, 2, 3, 5, 100):
        assert await paged_ids(api, reader, limit) == expected
    assert not {tied[1], tied[2]} & await inspect.pushed(reader)


async def test_unfollow_delete_and_erasure_remove_merged_posts(hybrid, inspect):
    api = hybrid
    reader = await api.register("rr")
    leaving, deleting, erased = [await large_author(api, inspect, f"r{i}", [reader, *[
        await api.register(f"rf{i}{j}") for j in range(PUSH_MAX)]]) for i in range(3)]
    posts = {a.id: [(await post(api, a, f"by {a.username} {k}"))["id"] for k in range(2)]
             for a in (leaving, deleting, erased)}
    await eventually(lambda: _has_all(api, reader, [p for ps in posts.values() for p in ps]),
                     timeout=FEED_DELAY_SECONDS)
    # Unfollow: the author's posts leave the reader's feed.
    status, _, _ = await api.request("DELETE", f"/users/{leaving.id}/follow", token=reader.token)
    assert status == 200
    await eventually(lambda: _lacks_all(api, reader, posts[leaving.id]), timeout=SETTLE_SECONDS)
    assert leaving.id not in await inspect.merged_authors(reader)
    # Delete: at once from the read, and from the author feed.
    status, _, _ = await api.request("DELETE", f"/posts/{posts[deleting.id][0]}", token=deleting.token)
    assert status == 204
    assert posts[deleting.id][0] not in await feed_ids(api, reader)
    await eventually(lambda: _not_in_author_feed(inspect, deleting, posts[deleting.id][0]), timeout=SETTLE_SECONDS)
    # Erasure of a large account: gone from the read, its author feed and merged sets.
    await api.app[appkeys.SERVICES].privacy.purge_now(erased.id)
    assert not set(posts[erased.id]) & set(await feed_ids(api, reader))
    assert erased.id not in await inspect.merged_authors(reader)
    assert await inspect.redis.exists(inspect.keys.author_feed(erased.id)) == 0
    assert await exact(api, inspect, reader)


async def _not_in_author_feed(inspect, author, post_id):
    return post_id not in await inspect.in_author_feed(author)


async def test_a_read_rebuilds_a_lost_author_feed_and_merged_author_set(hybrid, inspect):
    api = hybrid
    reader = await api.register("lr")
    author = await large_author(api, inspect, "la", [reader, *[await api.register(f"lf{j}") for j in range(PUSH_MAX)]])
    made = [(await post(api, author, f"kept {i}"))["id"] for i in range(3)]
    own = (await post(api, reader, "mine"))["id"]
    await eventually(lambda: _has_all(api, reader, [*made, own]), timeout=FEED_DELAY_SECONDS)
    expected = await inspect.expected_feed(reader)
    await inspect.redis.delete(inspect.keys.author_feed(author.id), inspect.keys.merged_authors(reader.id))
    assert await paged_ids(api, reader, 2) == expected == [own, *reversed(made)]
    assert set(made) <= await inspect.in_author_feed(author)
    assert await inspect.merged_authors(reader) == {author.id}
    # Evicted while the author posts: the post is in the rebuilt author feed, not lost.
    await inspect.redis.delete(inspect.keys.author_feed(author.id))
    late = (await post(api, author, "while evicted"))["id"]
    await eventually(lambda: _has(api, reader, late), timeout=FEED_DELAY_SECONDS)
    assert await exact(api, inspect, reader)
