"""The posts context: posts, comments, likes, and the popular ranking."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from kernel.cursors import Cursors, page
from kernel.errors import Forbidden, NotFound
from kernel.ids import canonical_uuid, parse_uuid
from kernel.settings import Settings
from kernel.timefmt import iso, utcnow
from server.bus.catalogue import COMMENT_CREATED, POST_CREATED, POST_DELETED, POST_LIKED, POST_UNLIKED
from server.bus.types import Consumer, DomainEvent
from server.read_models.posts import Comment, CommentList, LikeState, Post, PostList
from server.services.privacy.contributions import ErasureStep, ExportSection, pg_keyset_pages
from server.services.users import UsersService
from storage.postgres.pool import Database
from storage.postgres.repos.outbox import OutboxRepo
from storage.postgres.repos.posts import CommentsRepo, LikesRepo, PostsRepo
from storage.postgres.repos.users import UsersRepo
from storage.redis.client import RedisUnavailable
from storage.redis.popular import PopularPostsCache

log = logging.getLogger("pulse.posts")

POST_NOT_FOUND = "No such post."
COMMENT_NOT_FOUND = "No such comment."
# Posts deleted per transaction by an erasure.
POST_DELETE_BATCH = 500


def post_dict(row: asyncpg.Record) -> Post:
    return {
        "id": str(row["id"]),
        "author": {"id": str(row["author_id"]), "username": row["author_username"],
                   "display_name": row["author_display_name"]},
        "body": row["body"],
        "created_at": iso(row["created_at"]),
        "like_count": row["like_count"],
        "comment_count": row["comment_count"],
        "liked_by_me": row["liked_by_me"],
    }


def comment_dict(row: asyncpg.Record) -> Comment:
    return {
        "id": str(row["id"]),
        "post_id": str(row["post_id"]),
        "author": {"id": str(row["author_id"]), "username": row["author_username"],
                   "display_name": row["author_display_name"]},
        "body": row["body"],
        "created_at": iso(row["created_at"]),
    }


def _post_id(value: str, message: str = POST_NOT_FOUND) -> UUID:
    """A path id; a malformed one names no post (404, not 400)."""
    parsed = parse_uuid(value)
    if parsed is None:
        raise NotFound(message)
    return parsed


class PostsService:
    def __init__(self, db: Database, users: UsersService, popular: PopularPostsCache, settings: Settings, *,
                 cursors: Cursors) -> None:
        self.db = db
        self.cursors = cursors
        self.users = users
        self.popular_set = popular
        self.settings = settings
        self.posts_repo = PostsRepo()
        self.comments_repo = CommentsRepo()
        self.likes_repo = LikesRepo()
        self.users_repo = UsersRepo()
        self.outbox_repo = OutboxRepo()

    # --- posts ------------------------------------------------------------------------

    async def create(self, author_id: str, body: str) -> Post:
        author = UUID(author_id)
        async with self.db.transaction(writes_of=[author_id]) as conn:
            row = await self.posts_repo.insert(conn, author, body)
            await self.outbox_repo.add(conn, POST_CREATED, {
                "post_id": str(row["id"]), "author_id": author_id, "created_at": iso(row["created_at"]),
            })
            post = await self.posts_repo.get_visible(conn, author, row["id"])
            # The author's profile row (locked by follows of them too) last, before commit.
            await self.users_repo.add_to_counters(conn, author, posts=1)
        await self.users.invalidate_profiles(author_id)
        if post is None:  # the author's account is no longer active
            raise NotFound("No such user.")
        return post_dict(post)

    async def get(self, viewer_id: str | None, post_id: str) -> Post:
        pid = _post_id(post_id)
        async with self.db.read() as conn:
            row = await self.posts_repo.get_visible(conn, parse_uuid(viewer_id or ""), pid)
        if row is None:
            raise NotFound(POST_NOT_FOUND)
        return post_dict(row)

    async def get_many(self, viewer_id: str | None, post_ids: list[str]) -> list[Post]:
        """Visible posts for these ids, in the order given (unknown, deleted or hidden ids
        are left out), in one query. For the feed and the popular list."""
        # Ids as text throughout (uuid.UUID and its str() are Python code; a feed page has
        # 20 of them): asyncpg takes text for uuid parameters.
        ids = [c for c in (canonical_uuid(p) for p in post_ids) if c is not None]
        if not ids:
            return []
        async with self.db.read(lag_ok=True, writes_of=[viewer_id]) as conn:
            rows = await self.posts_repo.get_many_visible(conn, parse_uuid(viewer_id or ""), ids)
        by_id = {}
        for row in rows:
            post = post_dict(row)
            by_id[post["id"]] = post
        return [by_id[i] for i in ids if i in by_id]

    async def recent_ids_by_authors(self, author_ids: list[str], limit: int, *,
                                    fresh: bool = False) -> list[tuple[str, str, datetime]]:
        """(post id, author id, created_at) of the newest visible posts of these authors,
        newest first: for rebuilding a cold feed. ``fresh``: from the primary (every
        committed post), not a replica that may lag."""
        ids = [u for u in (parse_uuid(a) for a in author_ids) if u is not None]
        if not ids:
            return []
        async with self.db.read(lag_ok=not fresh) as conn:
            rows = await self.posts_repo.list_recent_ids_by_authors(conn, ids, limit)
        return [(str(r["id"]), str(r["author_id"]), r["created_at"]) for r in rows]

    async def delete(self, actor_id: str, post_id: str) -> None:
        pid = _post_id(post_id)
        async with self.db.transaction(writes_of=[actor_id]) as conn:
            author = await self.posts_repo.get_author_for_update(conn, pid)
            if author is None:
                raise NotFound(POST_NOT_FOUND)
            if str(author) != actor_id:
                raise Forbidden("Only the author can delete a post.")
            await self.posts_repo.delete(conn, pid)
            await self.users_repo.add_to_counters(conn, author, posts=-1)
            await self.outbox_repo.add(conn, POST_DELETED, {"post_id": str(pid), "author_id": str(author)})
        await self.users.invalidate_profiles(str(author))

    async def list_by_author(self, viewer_id: str | None, user: str, *, limit: int,
                             cursor: str | None) -> PostList:
        """A user's posts (by id or username), newest first."""
        before = self.cursors.decode(cursor, datetime, UUID)
        profile = await self.users.get_public(user, viewer_id=viewer_id)  # 404 for unknown or hidden users
        # Authors read their own list from the primary: they must see the post they just made.
        async with self.db.read(lag_ok=profile["id"] != viewer_id, writes_of=[viewer_id, profile["id"]]) as conn:
            rows = await self.posts_repo.list_by_author(conn, parse_uuid(viewer_id or ""), UUID(profile["id"]),
                                                   limit=limit + 1, before=before)
        return page(rows, limit, lambda r: self.cursors.encode(r["created_at"], r["id"]), post_dict)

    # --- likes ------------------------------------------------------------------------

    async def like(self, actor_id: str, post_id: str) -> LikeState:
        """Idempotent: liking twice is one like."""
        return await self._set_like(actor_id, post_id, liked=True)

    async def unlike(self, actor_id: str, post_id: str) -> LikeState:
        return await self._set_like(actor_id, post_id, liked=False)

    async def _set_like(self, actor_id: str, post_id: str, *, liked: bool) -> LikeState:
        pid = _post_id(post_id)
        actor = UUID(actor_id)
        async with self.db.transaction(writes_of=[actor_id]) as conn:
            author = await self.posts_repo.get_visible_author(conn, pid)
            if author is None:
                raise NotFound(POST_NOT_FOUND)
            try:
                changed = await (self.likes_repo.insert if liked else self.likes_repo.delete)(conn, pid, actor)
            except asyncpg.ForeignKeyViolationError:  # the post was deleted meanwhile
                raise NotFound(POST_NOT_FOUND) from None
            if changed:
                await self.outbox_repo.add(conn, POST_LIKED if liked else POST_UNLIKED, {
                    "post_id": str(pid), "post_author_id": str(author), "actor_id": actor_id,
                })
                # The row lock taken by this UPDATE serialises concurrent likes of a post:
                # the count moves by exactly one per like row added or removed. Last before
                # the commit, so a popular post's row is locked for as short as possible.
                like_count = await self.posts_repo.add_to_like_count(conn, pid, 1 if liked else -1)
            else:
                like_count = await self.posts_repo.get_like_count(conn, pid)
            if like_count is None:
                raise NotFound(POST_NOT_FOUND)
        return {"liked": liked, "like_count": like_count}

    # --- comments ---------------------------------------------------------------------

    async def add_comment(self, actor_id: str, post_id: str, body: str) -> Comment:
        pid = _post_id(post_id)
        async with self.db.transaction(writes_of=[actor_id]) as conn:
            author = await self.posts_repo.get_visible_author(conn, pid)
            if author is None:
                raise NotFound(POST_NOT_FOUND)
            try:
                comment_id = await self.comments_repo.insert(conn, pid, UUID(actor_id), body)
            except asyncpg.ForeignKeyViolationError:
                raise NotFound(POST_NOT_FOUND) from None
            await self.outbox_repo.add(conn, COMMENT_CREATED, {
                "comment_id": str(comment_id), "post_id": str(pid), "post_author_id": str(author),
                "actor_id": actor_id,
            })
            row = await self.comments_repo.get_visible(conn, comment_id)
            # The post's row lock (the hot one on a popular post) last, just before commit.
            await self.posts_repo.add_to_comment_count(conn, pid, 1)
        if row is None:
            raise NotFound("No such user.")
        return comment_dict(row)

    async def list_comments(self, post_id: str, *, limit: int, cursor: str | None,
                            viewer_id: str | None = None) -> CommentList:
        """A post's comments, oldest first."""
        after = self.cursors.decode(cursor, datetime, UUID)
        pid = _post_id(post_id)
        async with self.db.read(lag_ok=True, writes_of=[viewer_id]) as conn:
            if await self.posts_repo.get_visible_author(conn, pid) is None:
                raise NotFound(POST_NOT_FOUND)
            rows = await self.comments_repo.list_for_post(conn, pid, limit=limit + 1, after=after)
        return page(rows, limit, lambda r: self.cursors.encode(r["created_at"], r["id"]), comment_dict)

    async def delete_comment(self, actor_id: str, comment_id: str) -> None:
        """By the comment's author or the post's author."""
        cid = _post_id(comment_id, COMMENT_NOT_FOUND)
        async with self.db.transaction(writes_of=[actor_id]) as conn:
            found = await self.comments_repo.get_authors_for_update(conn, cid)
            if found is None:
                raise NotFound(COMMENT_NOT_FOUND)
            if actor_id not in (str(found["author_id"]), str(found["post_author_id"])):
                raise Forbidden("Only the comment's author or the post's author can delete a comment.")
            if await self.comments_repo.delete(conn, cid):
                await self.posts_repo.add_to_comment_count(conn, found["post_id"], -1)

    # --- popular ----------------------------------------------------------------------

    def _window_start(self) -> datetime:
        return utcnow() - timedelta(hours=self.settings.popular_window_hours)

    async def rebuild_popular(self) -> None:
        """Rebuild the Redis ranking from PostgreSQL."""
        async with self.db.read(lag_ok=True) as conn:
            rows = await self.posts_repo.list_most_liked_since(conn, self._window_start(),
                                                          self.settings.popular_max_posts)
        await self.popular_set.replace_all(
            ((str(r["id"]), r["like_count"], r["created_at"].timestamp()) for r in rows),
            self.settings.popular_rebuild_seconds,
        )

    async def popular(self, viewer_id: str | None, *, limit: int, cursor: str | None) -> PostList:
        """Most liked posts of the recent window, from Redis (rebuilt when cold); keyset
        on (likes, id), both descending."""
        decoded = self.cursors.decode(cursor, int, UUID)
        after = (decoded[0], str(decoded[1])) if decoded else None
        window_start = self._window_start().timestamp()
        try:
            if not await self.popular_set.is_fresh():
                await self.rebuild_popular()
            ranked = await self.popular_set.top(self.settings.popular_max_posts, window_start)
        except RedisUnavailable as exc:  # Redis down: rank straight from PostgreSQL
            log.warning("popular posts from PostgreSQL, Redis unavailable: %s", exc)
            async with self.db.read(lag_ok=True) as conn:
                rows = await self.posts_repo.list_most_liked_since(conn, self._window_start(),
                                                              self.settings.popular_max_posts)
            ranked = [(str(r["id"]), r["like_count"]) for r in rows]
        if after is not None:
            ranked = [(pid, likes) for pid, likes in ranked if (likes, pid) < after]
        # Fetch a little more than a page: some ranked posts may be gone or hidden.
        chosen = ranked[: limit + 1 + 10]
        posts = {p["id"]: p for p in await self.get_many(viewer_id, [pid for pid, _ in chosen])}
        rows = [(likes, posts[pid]) for pid, likes in chosen if pid in posts]
        return page(rows, limit, lambda r: self.cursors.encode(r[0], r[1]["id"]), lambda r: r[1])

    async def on_like_changed(self, event: DomainEvent) -> None:
        """Consumer of post.liked / post.unliked / post.deleted: sets the post's score to
        its current like count (absolute, so a redelivery changes nothing)."""
        post_id = event.payload["post_id"]
        if not await self.popular_set.is_fresh():
            await self.rebuild_popular()
            return
        pid = parse_uuid(post_id)
        row = None
        if pid is not None and event.type != POST_DELETED:
            async with self.db.read() as conn:
                row = await self.posts_repo.get_popularity(conn, pid)
        window_start = self._window_start()
        if row is None or row["like_count"] <= 0 or row["created_at"] < window_start:
            await self.popular_set.remove(post_id)
        else:
            await self.popular_set.put(post_id, row["like_count"], row["created_at"].timestamp())
        await self.popular_set.drop_older_than(window_start.timestamp())

    def consumers(self) -> list[Consumer]:
        return [Consumer(name="posts.popular", event_types=(POST_LIKED, POST_UNLIKED, POST_DELETED),
                         handle=self.on_like_changed)]

    # --- erasure and export (for the privacy context) ----------------------------------

    def erasure_steps(self) -> list[ErasureStep]:
        async def likes(uid: UUID) -> None:
            # Deleted with the like counts of others' posts adjusted, in one statement.
            async with self.db.transaction() as conn:
                changed = await self.likes_repo.delete_all_by_user(conn, uid)
            if changed:
                await self.rebuild_popular()

        async def comments(uid: UUID) -> None:
            async with self.db.transaction() as conn:
                await self.comments_repo.delete_all_by_author(conn, uid)

        async def posts(uid: UUID) -> None:
            # In batches (each its own transaction): a prolific author never needs one huge
            # statement; a crash between batches just leaves fewer for the rerun.
            while True:
                async with self.db.transaction() as conn:
                    gone = await self.posts_repo.delete_batch_by_author(conn, uid, POST_DELETE_BATCH)
                if gone:
                    await self.popular_set.remove(*(str(p) for p in gone))
                if len(gone) < POST_DELETE_BATCH:
                    return

        return [ErasureStep("posts.likes", likes), ErasureStep("posts.comments", comments),
                ErasureStep("posts.posts", posts)]

    def export_sections(self) -> list[ExportSection]:
        return [
            ExportSection("posts", pg_keyset_pages(self.db, self.posts_repo.page_by_author, lambda r: {
                "id": str(r["id"]), "body": r["body"], "created_at": iso(r["created_at"]),
                "like_count": r["like_count"], "comment_count": r["comment_count"]})),
            ExportSection("comments", pg_keyset_pages(self.db, self.comments_repo.page_by_author, lambda r: {
                "id": str(r["id"]), "post_id": str(r["post_id"]), "body": r["body"],
                "created_at": iso(r["created_at"])})),
            ExportSection("likes", pg_keyset_pages(self.db, self.likes_repo.page_by_user, lambda r: {
                "post_id": str(r["post_id"]), "created_at": iso(r["created_at"])}, id_column="post_id")),
        ]
