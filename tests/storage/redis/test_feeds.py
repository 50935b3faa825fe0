"""FeedCache against a real Redis: paging with ties, caps, removal, the built marker."""
from __future__ import annotations

import uuid

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from storage.redis.client import Keys
from storage.redis.feeds import FeedCache

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def store(redis_url):
    redis = aioredis.from_url(redis_url)
    yield FeedCache(redis, Keys(f"feedtest-{uuid.uuid4().hex[:8]}"), max_items=10, ttl_seconds=60)
    await redis.aclose()


def uid() -> str:
    return str(uuid.uuid4())


async def read_all(store, user, count):
    seen, after = [], None
    while True:
        entries = await store.page(user, after=after, count=count + 1)
        assert entries is not None
        more = len(entries) > count
        entries = entries[:count]
        seen += entries
        if not more:
            return seen
        after = (entries[-1].score, entries[-1].member)


async def test_unbuilt_feed_reads_as_none_until_merged_as_built(store):
    user, author = uid(), uid()
    assert await store.page(user, after=None, count=5) is None
    await store.add_to_feeds([user], author, uid(), 1000.5)
    assert await store.page(user, after=None, count=5) is None  # fanned out, but not built
    await store.merge(user, [], built=True)
    entries = await store.page(user, after=None, count=5)
    assert len(entries) == 1 and entries[0].author_id == author


async def test_pages_return_each_entry_once_newest_first_even_with_tied_scores(store):
    user, author = uid(), uid()
    posts = [(author, uid(), 2000.0 + (i // 3)) for i in range(9)]  # three posts per score
    await store.merge(user, posts, built=True)
    for count in (1, 2, 4, 9):
        seen = await read_all(store, user, count)
        assert sorted(e.post_id for e in seen) == sorted(p for _, p, _ in posts)
        scores = [float(e.score) for e in seen]
        assert scores == sorted(scores, reverse=True)


async def test_feeds_are_capped_to_the_newest(store):
    user, author = uid(), uid()
    posts = [(author, uid(), 3000.0 + i) for i in range(15)]
    await store.merge(user, posts[:5], built=True)
    for _, post_id, score in posts[5:]:
        await store.add_to_feeds([user], author, post_id, score)
    seen = await read_all(store, user, 100)
    assert [e.post_id for e in seen] == [p for _, p, _ in reversed(posts[-10:])]


async def test_remove_post_and_author(store):
    user, a, b = uid(), uid(), uid()
    pa, pb1, pb2 = uid(), uid(), uid()
    await store.merge(user, [(a, pa, 1.0), (b, pb1, 2.0), (b, pb2, 3.0)], built=True)
    await store.remove_from_feeds([user], b, pb2)
    assert [e.post_id for e in await store.page(user, after=None, count=10)] == [pb1, pa]
    assert await store.remove_author(user, b) == 1
    assert [e.post_id for e in await store.page(user, after=None, count=10)] == [pa]
    assert await store.remove_author(user, b) == 0  # idempotent
