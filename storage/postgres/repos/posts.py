"""Posts, comments and likes (the posts aggregate). Only posts (and comments) whose
author is active are visible: a user pending erasure disappears from every read."""
from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

# A post as the API shows it, for viewer $1 (NULL viewer: liked_by_me is false).
_POST_SELECT = """
    SELECT p.id, p.body, p.created_at, p.like_count, p.comment_count,
           p.author_id, u.username AS author_username, pr.display_name AS author_display_name,
           ($1::uuid IS NOT NULL AND EXISTS (
               SELECT 1 FROM likes l WHERE l.post_id = p.id AND l.user_id = $1::uuid)) AS liked_by_me
    FROM posts p
    JOIN users u ON u.id = p.author_id AND u.status = 'active'
    JOIN profiles pr ON pr.user_id = p.author_id
"""

_COMMENT_SELECT = """
    SELECT c.id, c.post_id, c.body, c.created_at,
           c.author_id, u.username AS author_username, pr.display_name AS author_display_name
    FROM comments c
    JOIN users u ON u.id = c.author_id AND u.status = 'active'
    JOIN profiles pr ON pr.user_id = c.author_id
"""


class PostsRepo:
    async def insert(self, conn: asyncpg.Connection, author_id: UUID, body: str) -> asyncpg.Record:
        return await conn.fetchrow(
            "INSERT INTO posts (author_id, body) VALUES ($1, $2) RETURNING id, author_id, created_at",
            author_id, body,
        )

    async def get_visible(self, conn: asyncpg.Connection, viewer_id: UUID | None, post_id: UUID) -> asyncpg.Record | None:
        return await conn.fetchrow(_POST_SELECT + " WHERE p.id = $2", viewer_id, post_id)

    async def get_many_visible(self, conn: asyncpg.Connection, viewer_id: UUID | None,
                               post_ids: list[UUID] | list[str]) -> list[asyncpg.Record]:
        """The visible posts among ``post_ids`` (UUIDs or their text; any order; missing
        ones left out)."""
        return await conn.fetch(_POST_SELECT + " WHERE p.id = ANY($2::uuid[])", viewer_id, post_ids)

    async def list_by_author(
        self, conn: asyncpg.Connection, viewer_id: UUID | None, author_id: UUID, *, limit: int,
        before: tuple[datetime, UUID] | None,
    ) -> list[asyncpg.Record]:
        """Newest first, keyset on (created_at, id) strictly after the cursor."""
        if before is None:
            return await conn.fetch(
                _POST_SELECT + " WHERE p.author_id = $2 ORDER BY p.created_at DESC, p.id DESC LIMIT $3",
                viewer_id, author_id, limit,
            )
        return await conn.fetch(
            _POST_SELECT + " WHERE p.author_id = $2 AND (p.created_at, p.id) < ($4, $5) "
            "ORDER BY p.created_at DESC, p.id DESC LIMIT $3",
            viewer_id, author_id, limit, before[0], before[1],
        )

    async def get_author_for_update(self, conn: asyncpg.Connection, post_id: UUID) -> UUID | None:
        """The author of a visible post, locking the row until the transaction ends."""
        return await conn.fetchval(
            "SELECT p.author_id FROM posts p JOIN users u ON u.id = p.author_id AND u.status = 'active' "
            "WHERE p.id = $1 FOR UPDATE OF p",
            post_id,
        )

    async def get_visible_author(self, conn: asyncpg.Connection, post_id: UUID) -> UUID | None:
        return await conn.fetchval(
            "SELECT p.author_id FROM posts p JOIN users u ON u.id = p.author_id AND u.status = 'active' "
            "WHERE p.id = $1",
            post_id,
        )

    async def delete(self, conn: asyncpg.Connection, post_id: UUID) -> None:
        await conn.execute("DELETE FROM posts WHERE id = $1", post_id)

    async def add_to_like_count(self, conn: asyncpg.Connection, post_id: UUID, delta: int) -> int | None:
        return await conn.fetchval(
            "UPDATE posts SET like_count = like_count + $2 WHERE id = $1 RETURNING like_count", post_id, delta
        )

    async def add_to_comment_count(self, conn: asyncpg.Connection, post_id: UUID, delta: int) -> None:
        await conn.execute("UPDATE posts SET comment_count = comment_count + $2 WHERE id = $1", post_id, delta)

    async def get_like_count(self, conn: asyncpg.Connection, post_id: UUID) -> int | None:
        return await conn.fetchval("SELECT like_count FROM posts WHERE id = $1", post_id)

    async def get_popularity(self, conn: asyncpg.Connection, post_id: UUID) -> asyncpg.Record | None:
        """Like count and age of a visible post (the popular set's inputs)."""
        return await conn.fetchrow(
            "SELECT p.id, p.like_count, p.created_at FROM posts p "
            "JOIN users u ON u.id = p.author_id AND u.status = 'active' WHERE p.id = $1",
            post_id,
        )

    async def list_most_liked_since(self, conn: asyncpg.Connection, since: datetime, limit: int) -> list[asyncpg.Record]:
        """Visible posts created since ``since`` with at least one like, most liked first."""
        return await conn.fetch(
            "SELECT p.id, p.like_count, p.created_at FROM posts p "
            "JOIN users u ON u.id = p.author_id AND u.status = 'active' "
            "WHERE p.created_at >= $1 AND p.like_count > 0 ORDER BY p.like_count DESC, p.id DESC LIMIT $2",
            since, limit,
        )

    # --- for other contexts (feed rebuilds, export, erasure) --------------------------

    async def list_recent_ids_by_authors(self, conn: asyncpg.Connection, author_ids: list[UUID],
                                         limit: int) -> list[asyncpg.Record]:
        """(id, author_id, created_at) of the newest visible posts of these authors."""
        return await conn.fetch(
            "SELECT p.id, p.author_id, p.created_at FROM posts p "
            "JOIN users u ON u.id = p.author_id AND u.status = 'active' "
            "WHERE p.author_id = ANY($1::uuid[]) ORDER BY p.created_at DESC, p.id DESC LIMIT $2",
            author_ids, limit,
        )

    async def list_all_by_author(self, conn: asyncpg.Connection, author_id: UUID) -> list[asyncpg.Record]:
        """Every post of a user, whatever their status (data export)."""
        return await conn.fetch(
            "SELECT id, body, created_at, like_count, comment_count FROM posts WHERE author_id = $1 "
            "ORDER BY created_at, id",
            author_id,
        )

    async def list_ids_by_author(self, conn: asyncpg.Connection, author_id: UUID) -> list[UUID]:
        return [r["id"] for r in await conn.fetch("SELECT id FROM posts WHERE author_id = $1", author_id)]

    async def recount(self, conn: asyncpg.Connection, post_ids: list[UUID]) -> None:
        """Recompute like and comment counts from the rows (after a purge removed some)."""
        await conn.execute(
            """
            UPDATE posts p SET
                like_count = (SELECT count(*) FROM likes l WHERE l.post_id = p.id),
                comment_count = (SELECT count(*) FROM comments c WHERE c.post_id = p.id)
            WHERE p.id = ANY($1::uuid[])
            """,
            post_ids,
        )


    async def page_by_author(self, conn: asyncpg.Connection, author_id: UUID,
                             after: tuple[datetime, UUID] | None, limit: int) -> list[asyncpg.Record]:
        """A page of every post of a user, whatever their status, oldest first (export)."""
        return await conn.fetch(
            "SELECT id, body, created_at, like_count, comment_count FROM posts WHERE author_id = $1 "
            "AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid)) ORDER BY created_at, id LIMIT $4",
            author_id, after[0] if after else None, after[1] if after else None, limit,
        )

    async def delete_batch_by_author(self, conn: asyncpg.Connection, author_id: UUID, limit: int) -> list[UUID]:
        """Erasure: up to ``limit`` of the user's posts (comments and likes on them
        cascade); returns their ids. Call until it returns nothing."""
        rows = await conn.fetch(
            "DELETE FROM posts WHERE id IN (SELECT id FROM posts WHERE author_id = $1 LIMIT $2) RETURNING id",
            author_id, limit,
        )
        return [r["id"] for r in rows]


class CommentsRepo:
    async def insert(self, conn: asyncpg.Connection, post_id: UUID, author_id: UUID, body: str) -> UUID:
        return await conn.fetchval(
            "INSERT INTO comments (post_id, author_id, body) VALUES ($1, $2, $3) RETURNING id",
            post_id, author_id, body,
        )

    async def get_visible(self, conn: asyncpg.Connection, comment_id: UUID) -> asyncpg.Record | None:
        return await conn.fetchrow(_COMMENT_SELECT + " WHERE c.id = $1", comment_id)

    async def list_for_post(self, conn: asyncpg.Connection, post_id: UUID, *, limit: int,
                            after: tuple[datetime, UUID] | None) -> list[asyncpg.Record]:
        """Oldest first, keyset on (created_at, id) strictly after the cursor."""
        if after is None:
            return await conn.fetch(
                _COMMENT_SELECT + " WHERE c.post_id = $1 ORDER BY c.created_at, c.id LIMIT $2", post_id, limit
            )
        return await conn.fetch(
            _COMMENT_SELECT + " WHERE c.post_id = $1 AND (c.created_at, c.id) > ($3, $4) "
            "ORDER BY c.created_at, c.id LIMIT $2",
            post_id, limit, after[0], after[1],
        )

    async def get_authors_for_update(self, conn: asyncpg.Connection, comment_id: UUID) -> asyncpg.Record | None:
        """The comment's author, its post and the post's author, locking the comment."""
        return await conn.fetchrow(
            "SELECT c.author_id, c.post_id, p.author_id AS post_author_id FROM comments c "
            "JOIN posts p ON p.id = c.post_id JOIN users u ON u.id = p.author_id AND u.status = 'active' "
            "WHERE c.id = $1 FOR UPDATE OF c",
            comment_id,
        )

    async def delete(self, conn: asyncpg.Connection, comment_id: UUID) -> bool:
        return await conn.fetchval("DELETE FROM comments WHERE id = $1 RETURNING true", comment_id) is not None

    async def list_all_by_author(self, conn: asyncpg.Connection, author_id: UUID) -> list[asyncpg.Record]:
        """Every comment of a user (data export)."""
        return await conn.fetch(
            "SELECT id, post_id, body, created_at FROM comments WHERE author_id = $1 ORDER BY created_at, id",
            author_id,
        )

    async def list_post_ids_commented_by(self, conn: asyncpg.Connection, author_id: UUID) -> list[UUID]:
        return [r["post_id"] for r in await conn.fetch(
            "SELECT DISTINCT post_id FROM comments WHERE author_id = $1", author_id)]


    async def page_by_author(self, conn: asyncpg.Connection, author_id: UUID,
                             after: tuple[datetime, UUID] | None, limit: int) -> list[asyncpg.Record]:
        """A page of every comment of a user, oldest first (export)."""
        return await conn.fetch(
            "SELECT id, post_id, body, created_at FROM comments WHERE author_id = $1 "
            "AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid)) ORDER BY created_at, id LIMIT $4",
            author_id, after[0] if after else None, after[1] if after else None, limit,
        )

    async def delete_all_by_author(self, conn: asyncpg.Connection, author_id: UUID) -> list[UUID]:
        """Erasure: every comment of a user, with the comment counts of the posts they were
        on decremented in the same statement (a rerun deletes and decrements nothing).
        Returns the posts whose count changed."""
        rows = await conn.fetch(
            "WITH gone AS (DELETE FROM comments WHERE author_id = $1 RETURNING post_id), "
            "per_post AS (SELECT post_id, count(*) AS n FROM gone GROUP BY post_id) "
            "UPDATE posts p SET comment_count = p.comment_count - per_post.n FROM per_post "
            "WHERE p.id = per_post.post_id RETURNING p.id",
            author_id,
        )
        return [r["id"] for r in rows]


class LikesRepo:
    async def insert(self, conn: asyncpg.Connection, post_id: UUID, user_id: UUID) -> bool:
        """True when the like is new (False: it existed already)."""
        return await conn.fetchval(
            "INSERT INTO likes (post_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
            post_id, user_id,
        ) is not None

    async def delete(self, conn: asyncpg.Connection, post_id: UUID, user_id: UUID) -> bool:
        """True when a like was removed."""
        return await conn.fetchval(
            "DELETE FROM likes WHERE post_id = $1 AND user_id = $2 RETURNING true", post_id, user_id
        ) is not None

    async def list_all_by_user(self, conn: asyncpg.Connection, user_id: UUID) -> list[asyncpg.Record]:
        """Every like of a user (data export)."""
        return await conn.fetch(
            "SELECT post_id, created_at FROM likes WHERE user_id = $1 ORDER BY created_at", user_id
        )

    async def list_post_ids_liked_by(self, conn: asyncpg.Connection, user_id: UUID) -> list[UUID]:
        return [r["post_id"] for r in await conn.fetch("SELECT post_id FROM likes WHERE user_id = $1", user_id)]

    async def page_by_user(self, conn: asyncpg.Connection, user_id: UUID,
                           after: tuple[datetime, UUID] | None, limit: int) -> list[asyncpg.Record]:
        """A page of every like of a user, oldest first (export)."""
        return await conn.fetch(
            "SELECT post_id, created_at FROM likes WHERE user_id = $1 "
            "AND ($2::timestamptz IS NULL OR (created_at, post_id) > ($2, $3::uuid)) "
            "ORDER BY created_at, post_id LIMIT $4",
            user_id, after[0] if after else None, after[1] if after else None, limit,
        )

    async def delete_all_by_user(self, conn: asyncpg.Connection, user_id: UUID) -> list[UUID]:
        """Erasure: every like of a user, with the like counts of those posts decremented in
        the same statement (a rerun deletes and decrements nothing). Returns the posts."""
        rows = await conn.fetch(
            "WITH gone AS (DELETE FROM likes WHERE user_id = $1 RETURNING post_id) "
            "UPDATE posts p SET like_count = p.like_count - 1 FROM gone WHERE p.id = gone.post_id RETURNING p.id",
            user_id,
        )
        return [r["id"] for r in rows]
