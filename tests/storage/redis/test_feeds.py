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


# --- hybrid fan-out: author feeds, merged authors, merged pages --------------------------

async def built_reader(store, user, authors, pushed=()):
    """A reader whose feed holds ``pushed`` and whose reads merge ``authors``."""
    await store.merge(user, list(pushed), built=True)
    token = await store.begin_merged_authors_build(user)
    assert await store.finish_merged_authors_build(user, token, authors)


async def built_author_feed(store, author, entries):
    token = await store.begin_author_feed_build(author)
    assert await store.finish_author_feed_build(author, token, entries)


async def read_merged(store, user, count):
    seen, after = [], None
    while True:
        page = await store.merged_page(user, after=after, count=count + 1)
        assert page.complete
        more = len(page.entries) > count
        seen += page.entries[:count]
        if not more:
            return seen
        after = (seen[-1].score, seen[-1].member)


async def test_a_merged_page_says_what_is_unbuilt(store):
    user, author = uid(), uid()
    page = await store.merged_page(user, after=None, count=5)
    assert page.feed_unbuilt and page.merged_authors_unbuilt and not page.complete
    await built_reader(store, user, [author])
    page = await store.merged_page(user, after=None, count=5)
    assert not page.feed_unbuilt and not page.merged_authors_unbuilt
    assert page.author_feeds_unbuilt == [author]
    await built_author_feed(store, author, [])
    page = await store.merged_page(user, after=None, count=5)
    assert page.complete and page.entries == [] and page.merged_authors == [author]


async def test_merged_pages_interleave_the_sources_once_each_with_ties_across_them(store):
    user, small, big1, big2 = uid(), uid(), uid(), uid()
    pushed = [(small, uid(), 5000.0 + i // 2) for i in range(6)]
    big1_posts = [(uid(), 5000.0 + i // 2) for i in range(5)]
    big2_posts = [(uid(), 5001.0), (uid(), 4999.0)]
    # One of big1's posts was pushed before big1 became large: it is in both.
    pushed.append((big1, big1_posts[0][0], big1_posts[0][1]))
    await built_reader(store, user, [big1, big2], pushed)
    await built_author_feed(store, big1, big1_posts)
    await built_author_feed(store, big2, big2_posts)
    everything = {f"{a}:{p}": s for a, p, s in pushed}
    everything.update({f"{big1}:{p}": s for p, s in big1_posts})
    everything.update({f"{big2}:{p}": s for p, s in big2_posts})
    expected = sorted(everything, key=lambda m: (everything[m], m), reverse=True)
    for count in (1, 2, 3, 7, 50):
        assert [e.member for e in await read_merged(store, user, count)] == expected


async def test_nothing_below_the_lowest_entry_of_a_full_source_is_read(store):
    # store's cap is 10: a full author feed may have lost older posts, so older entries
    # of the reader's feed are not shown either (no holes); and the other way round.
    user, small, big = uid(), uid(), uid()
    big_posts = [(uid(), 6000.0 + 2 * i) for i in range(10)]  # 6000 .. 6018, full
    pushed = [(small, uid(), 5990.0 + 2 * i + 1) for i in range(8)]  # 5991 .. 6005
    await built_reader(store, user, [big], pushed)
    await built_author_feed(store, big, big_posts)
    scores = [s for _, s in big_posts] + [s for _, _, s in pushed]
    expected = sorted((s for s in scores if s >= 6000.0), reverse=True)  # 6000 is big's oldest
    assert [float(e.score) for e in await read_merged(store, user, 3)] == expected
    # A full feed bounds the author feeds alike.
    user2 = uid()
    await built_reader(store, user2, [big], [(small, uid(), 6009.0 + i) for i in range(10)])  # 6009 .. 6018
    assert min(float(e.score) for e in await read_merged(store, user2, 4)) == 6009.0


async def test_a_removal_cancels_a_build_that_read_before_it_and_additions_survive_one(store):
    author, post_a, post_b = uid(), uid(), uid()
    token = await store.begin_author_feed_build(author)
    await store.add_to_author_feed(author, post_b, 2.0)  # posted while the build reads
    assert await store.finish_author_feed_build(author, token, [(post_a, 1.0)])
    user = uid()
    await built_reader(store, user, [author])
    assert [e.post_id for e in (await store.merged_page(user, after=None, count=5)).entries] == [post_b, post_a]
    # A delete while a build reads: the build read the post, so it must not write.
    await store.drop_author_feed(author)
    token = await store.begin_author_feed_build(author)
    await store.remove_from_author_feed(author, post_a)
    assert not await store.finish_author_feed_build(author, token, [(post_a, 1.0), (post_b, 2.0)])
    assert not await store.author_feed_built(author)
    # Nothing is added to an author feed that does not exist (a build reads it later).
    assert not await store.add_to_author_feed(author, uid(), 3.0)
    # The same for a reader's merged authors: an unfollow cancels the build, a follow joins it.
    other, third = uid(), uid()
    token = await store.begin_merged_authors_build(user + "x")
    await store.add_merged_author([user + "x"], third)
    await store.remove_merged_author([user + "x"], other)
    assert not await store.finish_merged_authors_build(user + "x", token, [other])
    assert await store.merged_authors(user + "x") is None
    token = await store.begin_merged_authors_build(user + "x")
    await store.add_merged_author([user + "x"], third)
    assert await store.finish_merged_authors_build(user + "x", token, [other])
    assert await store.merged_authors(user + "x") == {other, third}


async def test_back_fill_moves_the_author_into_the_feeds_of_those_merging_them(store):
    author, merging, unfollowed, unbuilt, cold = uid(), uid(), uid(), uid(), uid()
    posts = [(uid(), 7000.0 + i) for i in range(3)]
    await built_reader(store, merging, [author])
    await built_reader(store, unfollowed, [])  # built without the author: they left
    await store.merge(unbuilt, [], built=True)  # their merged authors were evicted
    # ``cold``: no feed at all (rebuilt from PostgreSQL when read)
    assert await store.backfill_from_author([merging, unfollowed, unbuilt, cold], author, posts) == 2
    ids = [p for p, _ in reversed(posts)]
    assert [e.post_id for e in await store.page(merging, after=None, count=10)] == ids
    assert await store.merged_authors(merging) == set()
    assert await store.page(unfollowed, after=None, count=10) == []
    assert [e.post_id for e in await store.page(unbuilt, after=None, count=10)] == ids
    assert await store.page(cold, after=None, count=10) is None
