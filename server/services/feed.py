"""The home feed: fan-out on write into Redis, read in pages, rebuilt from PostgreSQL
when a feed is cold; large accounts merged in when read (hybrid fan-out).

A consumer of the domain events keeps the feeds: ``post.created`` adds the post to its
author's followers' feeds and the author's own, ``post.deleted`` takes it out again,
``user.unfollowed`` removes that author's posts from the unfollower's feed and
``user.followed`` adds the followee's recent posts. Every handler is idempotent (sorted
set adds and removals), and the follow handlers check the graph as it is now, so
follow/unfollow events handled out of order still leave the right feed.

Hybrid fan-out. An author with more than ``fanout_push_max_followers`` followers is not
pushed: their posts go into their *author feed* (one sorted set, same members and scores)
and every follower's read merges the author feeds of the large accounts they follow (a
per-reader set, *merged authors*) with their own feed, in one Redis round trip, same
order, same cursors. Which authors are large is PostgreSQL's ``feed_fanout_modes``; a
second consumer checks the followee's count after every follow and unfollow (and the
erasure after it removed an account's follows) and crosses the threshold:

- up (more than the maximum): mode ``to_pull`` (posts pushed *and* kept per author),
  author feed built, the author added to every follower's merged authors, then ``pull``
  (no more pushing). A reader sees the author either way throughout: no gap; an entry in
  both places is read once. Entries pushed before stay in followers' feeds.
- down (at most ``fanout_push_resume_followers``, 90 % of the maximum by default):
  ``to_push`` (both written again), each follower's feed back-filled with the author's
  recent posts and the author taken out of their merged authors in one step, then plain
  fan-out and the author feed dropped.

The gap between the two thresholds is the hysteresis: an author hovering around the
maximum crosses once, and back only after losing a tenth of their followers. Crossings
of one author are serialised by an advisory lock; one that stopped half-way (crash) is
resumed from its mode by the next follow change. Each step that adds an author to a
follower's structures checks the graph again afterwards and takes back what a concurrent
unfollow removed.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Protocol
from uuid import UUID

from kernel.cursors import Cursors, Score
from server.bus.catalogue import POST_CREATED, POST_DELETED, USER_FOLLOWED, USER_UNFOLLOWED
from server.bus.types import Consumer, DomainEvent
from server.read_models.posts import Post, PostList
from server.services.privacy.contributions import ErasureStep
from server.services.social import SocialService
from storage.postgres.pool import Database
from storage.postgres.repos.fanout_modes import FanoutModesRepo
from storage.redis.client import RedisUnavailable
from storage.redis.feeds import FeedCache, FeedEntry, member

log = logging.getLogger("pulse.feed")

# Name durable queues and the processed-events records: never change them.
FEED_CONSUMER = "social.feed"
FEED_EVENTS = (POST_CREATED, POST_DELETED, USER_FOLLOWED, USER_UNFOLLOWED)
FANOUT_MODES_CONSUMER = "social.fanout_modes"
FANOUT_MODES_EVENTS = (USER_FOLLOWED, USER_UNFOLLOWED)

# Fan-out modes (``feed_fanout_modes.mode``; no row: pushed on write).
TO_PULL, PULL, TO_PUSH = "to_pull", "pull", "to_push"
# Followers handled per step of a crossing (one Redis script and one PostgreSQL check each).
_CROSSING_BATCH = 500
# A read whose builds keep being overtaken (a crossing or an unfollow right then) tries
# this often, then reads that page from PostgreSQL.
_READ_ATTEMPTS = 4


class PostsReader(Protocol):
    """What the feed needs of the posts context (``PostsService``)."""

    async def get_many(self, viewer_id: str, post_ids: list[str]) -> list[Post]:
        """The posts in the order asked, missing or hidden ones left out."""

    async def recent_ids_by_authors(self, author_ids: list[str], limit: int, *,
                                    fresh: bool = False) -> list[tuple[str, str, datetime]]:
        """(post id, author id, created_at) of these authors' newest posts, newest first;
        ``fresh``: every committed post (the primary)."""


def _score(moment: datetime | str) -> float:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.timestamp()


def _chunks(items: list[str], size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class FeedService:
    def __init__(self, store: FeedCache, social: SocialService, posts: PostsReader, *, db: Database,
                 max_items: int, cursors: Cursors, push_max_followers: int, resume_followers: int) -> None:
        self.store = store
        self.cursors = cursors
        self.social = social
        self.posts = posts
        self.db = db
        self.max_items = max_items
        self.push_max_followers = push_max_followers
        self.resume_followers = min(resume_followers, push_max_followers)
        self.modes_repo = FanoutModesRepo()
        self._author_feed_builds: dict[str, asyncio.Future] = {}

    # --- reading --------------------------------------------------------------------

    async def page(self, viewer_id: str, *, limit: int, cursor: str | None) -> PostList:
        """Posts of followed users and the viewer's own, newest first."""
        after = self._decode(cursor)
        try:
            entries = await self._merged_entries(viewer_id, after=after, count=limit + 1)
        except RedisUnavailable as exc:
            log.warning("feed store unavailable, reading the feed from PostgreSQL: %s", exc)
            entries = await self._entries_from_postgres(viewer_id, after=after, count=limit + 1)
        more = len(entries) > limit
        entries = entries[:limit]
        posts = await self.posts.get_many(viewer_id, [e.post_id for e in entries]) if entries else []
        last = entries[-1] if more else None
        return {"items": posts, "next_cursor": self.cursors.encode(last.score, last.author_id, last.post_id) if last else None}

    async def _entries_from_postgres(self, user_id: str, *, after: tuple[str, str] | None,
                                     count: int) -> list[FeedEntry]:
        """The same page as the Redis feed would give (same cursors), from PostgreSQL:
        the degraded path while Redis is down."""
        authors = [*await self.social.followee_ids(user_id), user_id]
        rows = await self.posts.recent_ids_by_authors(authors, self.max_items)
        entries = [FeedEntry(author_id, post_id, repr(_score(created_at)))
                   for post_id, author_id, created_at in rows]
        entries.sort(key=lambda e: (float(e.score), e.member), reverse=True)
        if after is not None:
            cursor = (float(after[0]), after[1])
            entries = [e for e in entries if (float(e.score), e.member) < cursor]
        return entries[:count]

    async def _merged_entries(self, user_id: str, *, after: tuple[str, str] | None,
                              count: int) -> list[FeedEntry]:
        """The user's feed merged with the author feeds of the large accounts they follow;
        what is missing in Redis is built first."""
        for _ in range(_READ_ATTEMPTS):
            page = await self.store.merged_page(user_id, after=after, count=count)
            if page.complete:
                return page.entries
            if page.feed_unbuilt:
                await self.rebuild(user_id)
            if page.merged_authors_unbuilt:
                await self._build_merged_authors(user_id)
            if page.author_feeds_unbuilt:
                await self._repair_author_feeds(user_id, page.author_feeds_unbuilt)
        log.info("feed of %s kept changing while built; page read from PostgreSQL", user_id)
        return await self._entries_from_postgres(user_id, after=after, count=count)

    async def rebuild(self, user_id: str) -> None:
        """Fills a cold feed from PostgreSQL (merging with anything fanned out meanwhile).
        Large accounts' posts too: read once more from their author feeds, they are one entry."""
        authors = [*await self.social.followee_ids(user_id), user_id]
        rows = await self.posts.recent_ids_by_authors(authors, self.max_items)
        await self.store.merge(user_id, [(author_id, post_id, _score(created_at))
                                         for post_id, author_id, created_at in rows], built=True)

    async def _build_merged_authors(self, user_id: str) -> None:
        """The large accounts the user follows, from PostgreSQL (under a build token: a
        concurrent unfollow or crossing makes it start over)."""
        token = await self.store.begin_merged_authors_build(user_id)
        if token is None:
            return
        async with self.db.read() as conn:
            authors = await self.modes_repo.merged_followees(conn, UUID(user_id))
        await self.store.finish_merged_authors_build(user_id, token, [str(a) for a in authors])

    async def _build_author_feed(self, author_id: str) -> None:
        """Builds a large account's author feed; the readers of one instance that find it
        missing at once (an eviction, a Redis restart: thousands of followers) share one
        build, so PostgreSQL gets one query per instance, not one per reader."""
        running = self._author_feed_builds.get(author_id)
        if running is None:
            running = asyncio.ensure_future(self._build_author_feed_once(author_id))
            self._author_feed_builds[author_id] = running
            running.add_done_callback(lambda _: self._author_feed_builds.pop(author_id, None))
        await asyncio.shield(running)

    async def _build_author_feed_once(self, author_id: str) -> None:
        token = await self.store.begin_author_feed_build(author_id)
        if token is None:
            return
        rows = await self.posts.recent_ids_by_authors([author_id], self.max_items, fresh=True)
        await self.store.finish_author_feed_build(author_id, token, [(post_id, _score(created_at))
                                                                     for post_id, _, created_at in rows])

    async def _repair_author_feeds(self, user_id: str, author_ids: list[str]) -> None:
        """Author feeds a read found unbuilt (evicted, lost with Redis, or the crossing
        just began): built again, unless the author is fanned out on write again (then
        only this reader's set still named them; their posts are in the reader's feed)."""
        async with self.db.read() as conn:
            modes = await self.modes_repo.modes_of(conn, [UUID(a) for a in author_ids])
        for author_id in author_ids:
            if UUID(author_id) in modes:
                await self._build_author_feed(author_id)
            else:
                await self.store.remove_merged_author([user_id], author_id)

    def _decode(self, cursor: str | None) -> tuple[str, str] | None:
        """(score as Redis wrote it, member) of the entry a page stopped at."""
        values = self.cursors.decode(cursor, Score, UUID, UUID)
        if values is None:
            return None
        score, author_id, post_id = values
        return str(score), member(str(author_id), str(post_id))

    # --- keeping feeds (the event consumer) -------------------------------------------

    def consumers(self) -> list[Consumer]:
        return [Consumer(name=FEED_CONSUMER, event_types=FEED_EVENTS, handle=self.handle),
                # Apart from the feed's own queue: a crossing takes a while (every follower)
                # and must not hold up the fan-out of posts.
                Consumer(name=FANOUT_MODES_CONSUMER, event_types=FANOUT_MODES_EVENTS,
                         handle=self.on_follow_change)]

    async def _mode_of(self, author_id: str) -> str | None:
        async with self.db.read() as conn:
            return await self.modes_repo.mode_of(conn, UUID(author_id))

    async def handle(self, event: DomainEvent) -> None:
        p = event.payload
        if event.type == POST_CREATED:
            author_id, score = p["author_id"], _score(p["created_at"])
            mode = await self._mode_of(author_id)
            readers = [author_id] if mode == PULL else [*await self.social.follower_ids(author_id), author_id]
            await self.store.add_to_feeds(readers, author_id, p["post_id"], score)
            if mode is not None:
                await self.store.add_to_author_feed(author_id, p["post_id"], score)
            # An event still in flight when its author was hidden or purged would recreate
            # feed entries (and the author's feed) the purge removed. Checked after the
            # write: every purge step runs after the account is hidden, so either this sees
            # the author gone and takes the write back, or the purge's steps come after it.
            if author_id not in await self.social.users_service.existing([author_id]):
                await self.store.remove_from_feeds(readers, author_id, p["post_id"])
                await self.store.remove_from_author_feed(author_id, p["post_id"])
                await self.store.drop(author_id)
        elif event.type == POST_DELETED:
            # Every follower's feed, a large author's too: it may hold the post from before
            # the crossing or from a rebuild.
            readers = [*await self.social.follower_ids(p["author_id"]), p["author_id"]]
            await self.store.remove_from_feeds(readers, p["author_id"], p["post_id"])
            await self.store.remove_from_author_feed(p["author_id"], p["post_id"])
        elif event.type == USER_UNFOLLOWED:
            if not await self.social.is_following(p["follower_id"], p["followee_id"]):
                await self.store.remove_author(p["follower_id"], p["followee_id"])
                await self.store.remove_merged_author([p["follower_id"]], p["followee_id"])
        elif event.type == USER_FOLLOWED:
            if await self.social.is_following(p["follower_id"], p["followee_id"]):
                mode = await self._mode_of(p["followee_id"])
                if mode != PULL:
                    rows = await self.posts.recent_ids_by_authors([p["followee_id"]], self.max_items)
                    await self.store.merge(p["follower_id"], [(author_id, post_id, _score(created_at))
                                                              for post_id, author_id, created_at in rows],
                                           built=False)
                if mode in (TO_PULL, PULL):
                    await self.store.add_merged_author([p["follower_id"]], p["followee_id"])

    # --- threshold crossings ----------------------------------------------------------

    async def on_follow_change(self, event: DomainEvent) -> None:
        await self.settle_fanout_mode(event.payload["followee_id"])

    def _wanted_mode(self, mode: str | None, followers: int) -> str | None:
        if mode in (None, TO_PUSH):
            return PULL if followers > self.push_max_followers else None
        return None if followers <= self.resume_followers else PULL

    async def settle_fanout_mode(self, author_id: str) -> str | None:
        """Crosses the threshold if the author's follower count says so (or finishes a
        crossing that stopped half-way); returns the mode (None: pushed on write)."""
        mode = await self._mode_of(author_id)
        if self._wanted_mode(mode, await self.social.follower_count(author_id)) == mode:
            return mode  # the common case, after any follow: two small queries, no lock
        async with self.db.session() as conn:
            if not await self.modes_repo.try_lock_crossing(conn, UUID(author_id)):
                # Another worker is crossing it; it checks the count again when done.
                return await self._mode_of(author_id)
            for _ in range(3):
                mode = await self._mode_of(author_id)
                wanted = self._wanted_mode(mode, await self.social.follower_count(author_id))
                if wanted == mode:
                    return mode
                if wanted == PULL:
                    await self._cross_to_pull(author_id)
                else:
                    await self._cross_to_push(author_id)
            return await self._mode_of(author_id)

    async def settle_all_fanout_modes(self) -> None:
        """Every author not simply pushed, checked against their count (after an erasure
        removed someone's follows, which emits no unfollow)."""
        async with self.db.read() as conn:
            authors = await self.modes_repo.list_authors(conn)
        for author in authors:
            await self.settle_fanout_mode(str(author))

    async def _set_mode(self, author_id: str, mode: str | None) -> None:
        async with self.db.transaction() as conn:
            if mode is None:
                await self.modes_repo.clear(conn, UUID(author_id))
            else:
                await self.modes_repo.set_mode(conn, UUID(author_id), mode)

    async def _cross_to_pull(self, author_id: str) -> None:
        # From here every post is pushed and kept in the author feed.
        await self._set_mode(author_id, TO_PULL)
        # An author feed left from an earlier time as a large account missed what was
        # pushed since: built anew (readers meanwhile build it themselves, or read the
        # posts from their feeds).
        await self.store.drop_author_feed(author_id)
        await self._build_author_feed(author_id)
        followers = await self.social.follower_ids(author_id)
        for batch in _chunks(followers, _CROSSING_BATCH):
            await self.store.add_merged_author(batch, author_id)
            # An unfollow handled between the list and the write is taken back here.
            gone = set(batch) - await self.social.followers_among(author_id, batch)
            if gone:
                await self.store.remove_merged_author(sorted(gone), author_id)
        # Every follower's reads now merge the author feed (or will build their set from
        # PostgreSQL, which says to_pull): pushing can stop.
        await self._set_mode(author_id, PULL)
        log.info("author %s above %d followers: no longer fanned out on write (%d followers)",
                 author_id, self.push_max_followers, len(followers))

    async def _cross_to_push(self, author_id: str) -> None:
        # From here every post is pushed again (and still kept in the author feed).
        await self._set_mode(author_id, TO_PUSH)
        rows = await self.posts.recent_ids_by_authors([author_id], self.max_items, fresh=True)
        recent = [(post_id, _score(created_at)) for post_id, _, created_at in rows]
        followers = await self.social.follower_ids(author_id)
        for batch in _chunks(followers, _CROSSING_BATCH):
            await self.store.backfill_from_author(batch, author_id, recent)
            gone = sorted(set(batch) - await self.social.followers_among(author_id, batch))
            for follower in gone:
                await self.store.remove_author(follower, author_id)
            if gone:
                await self.store.remove_merged_author(gone, author_id)
        await self._set_mode(author_id, None)
        await self.store.drop_author_feed(author_id)
        log.info("author %s down to %d followers or fewer: fanned out on write again (%d followers)",
                 author_id, self.resume_followers, len(followers))

    # --- erasure (for the privacy context) --------------------------------------------

    def erasure_steps(self) -> list[ErasureStep]:
        async def entries(uid: UUID) -> None:
            # The user's entries out of every follower's feed (their own feed key goes with
            # redis.user_keys), and a large account out of its followers' merged authors.
            # Before the follows go: they say whose feeds hold them.
            followers = await self.social.follower_ids(str(uid))
            for follower in followers:
                await self.store.remove_author(follower, str(uid))
            await self.forget_large_author(str(uid), followers)

        return [ErasureStep("feed.entries", entries, before=("social.follows",))]

    def erasure_steps_after_follows(self) -> list[ErasureStep]:
        """To run after ``social.follows`` (create_app lists them there)."""
        async def fanout_modes(uid: UUID) -> None:
            # The follows are gone without unfollow events: a large account the user
            # followed may be back under the threshold (its followers' feeds back-filled).
            await self.settle_all_fanout_modes()

        return [ErasureStep("feed.fanout_modes", fanout_modes)]

    async def forget_large_author(self, author_id: str, follower_ids: list[str]) -> None:
        """An erased large account out of its followers' merged authors, its author feed
        and its mode."""
        if await self._mode_of(author_id) is None:
            return
        await self.store.remove_merged_author(follower_ids, author_id)
        await self.store.drop_author_feed(author_id)
        await self._set_mode(author_id, None)
