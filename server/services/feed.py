"""The home feed: fan-out on write into Redis, read in pages, rebuilt from PostgreSQL
when a feed is cold.

A consumer of the domain events keeps the feeds: ``post.created`` adds the post to its
author's followers' feeds and the author's own, ``post.deleted`` takes it out again,
``user.unfollowed`` removes that author's posts from the unfollower's feed and
``user.followed`` adds the followee's recent posts. Every handler is idempotent (sorted
set adds and removals), and the follow handlers check the graph as it is now, so
follow/unfollow events handled out of order still leave the right feed.
"""
from __future__ import annotations

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
from storage.redis.client import RedisUnavailable
from storage.redis.feeds import FeedCache, FeedEntry, member

log = logging.getLogger("pulse.feed")

# Names a durable queue and the processed-events record: never change it.
FEED_CONSUMER = "social.feed"
FEED_EVENTS = (POST_CREATED, POST_DELETED, USER_FOLLOWED, USER_UNFOLLOWED)


class PostsReader(Protocol):
    """What the feed needs of the posts context (``PostsService``)."""

    async def get_many(self, viewer_id: str, post_ids: list[str]) -> list[Post]:
        """The posts in the order asked, missing or hidden ones left out."""

    async def recent_ids_by_authors(self, author_ids: list[str], limit: int) -> list[tuple[str, str, datetime]]:
        """(post id, author id, created_at) of these authors' newest posts, newest first."""


def _score(moment: datetime | str) -> float:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.timestamp()


class FeedService:
    def __init__(self, store: FeedCache, social: SocialService, posts: PostsReader, *, max_items: int,
                 cursors: Cursors) -> None:
        self.store = store
        self.cursors = cursors
        self.social = social
        self.posts = posts
        self.max_items = max_items

    # --- reading --------------------------------------------------------------------

    async def page(self, viewer_id: str, *, limit: int, cursor: str | None) -> PostList:
        """Posts of followed users and the viewer's own, newest first."""
        after = self._decode(cursor)
        try:
            entries = await self.store.page(viewer_id, after=after, count=limit + 1)
            if entries is None:
                await self.rebuild(viewer_id)
                entries = await self.store.page(viewer_id, after=after, count=limit + 1) or []
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

    async def rebuild(self, user_id: str) -> None:
        """Fills a cold feed from PostgreSQL (merging with anything fanned out meanwhile)."""
        authors = [*await self.social.followee_ids(user_id), user_id]
        rows = await self.posts.recent_ids_by_authors(authors, self.max_items)
        await self.store.merge(user_id, [(author_id, post_id, _score(created_at))
                                         for post_id, author_id, created_at in rows], built=True)

    def _decode(self, cursor: str | None) -> tuple[str, str] | None:
        """(score as Redis wrote it, member) of the entry a page stopped at."""
        values = self.cursors.decode(cursor, Score, UUID, UUID)
        if values is None:
            return None
        score, author_id, post_id = values
        return str(score), member(str(author_id), str(post_id))

    # --- keeping feeds (the event consumer) -------------------------------------------

    def consumer(self) -> Consumer:
        return Consumer(name=FEED_CONSUMER, event_types=FEED_EVENTS, handle=self.handle)

    async def handle(self, event: DomainEvent) -> None:
        p = event.payload
        if event.type == POST_CREATED:
            readers = [*await self.social.follower_ids(p["author_id"]), p["author_id"]]
            await self.store.add_to_feeds(readers, p["author_id"], p["post_id"], _score(p["created_at"]))
            # An event still in flight when its author was hidden or purged would recreate
            # feed entries (and the author's feed) the purge removed. Checked after the
            # write: every purge step runs after the account is hidden, so either this sees
            # the author gone and takes the write back, or the purge's steps come after it.
            if p["author_id"] not in await self.social.users_service.existing([p["author_id"]]):
                await self.store.remove_from_feeds(readers, p["author_id"], p["post_id"])
                await self.store.drop(p["author_id"])
        elif event.type == POST_DELETED:
            readers = [*await self.social.follower_ids(p["author_id"]), p["author_id"]]
            await self.store.remove_from_feeds(readers, p["author_id"], p["post_id"])
        elif event.type == USER_UNFOLLOWED:
            if not await self.social.is_following(p["follower_id"], p["followee_id"]):
                await self.store.remove_author(p["follower_id"], p["followee_id"])
        elif event.type == USER_FOLLOWED:
            if await self.social.is_following(p["follower_id"], p["followee_id"]):
                rows = await self.posts.recent_ids_by_authors([p["followee_id"]], self.max_items)
                await self.store.merge(p["follower_id"], [(author_id, post_id, _score(created_at))
                                                          for post_id, author_id, created_at in rows], built=False)

    # --- erasure (for the privacy context) --------------------------------------------

    def erasure_steps(self) -> list[ErasureStep]:
        async def entries(uid: UUID) -> None:
            # The user's entries out of every follower's feed (their own feed key goes with
            # redis.user_keys). Before the follows go: they say whose feeds hold them.
            for follower in await self.social.follower_ids(str(uid)):
                await self.store.remove_author(follower, str(uid))

        return [ErasureStep("feed.entries", entries, before=("social.follows",))]
