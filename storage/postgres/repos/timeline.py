"""What a home feed is made of, read from PostgreSQL when a Redis feed has to be
(re)built: the newest posts of the people a user follows, and the user's own.

This reads the posts context's table for one reason: the rebuild is a join of follows
(ours) with posts, and doing it as one indexed query beats fetching every followee's
ids and asking the posts service per author.
"""
from __future__ import annotations

from uuid import UUID

import asyncpg


class TimelineRepo:
    async def newest_posts_for(self, conn: asyncpg.Connection, user_id: UUID, limit: int) -> list[asyncpg.Record]:
        """(id, author_id, created_at) of the newest posts by ``user_id`` and those they
        follow, newest first."""
        return await conn.fetch(
            "SELECT p.id, p.author_id, p.created_at FROM posts p "
            "WHERE p.author_id = $1 OR p.author_id IN (SELECT followee_id FROM follows WHERE follower_id = $1) "
            "ORDER BY p.created_at DESC, p.id DESC LIMIT $2",
            user_id, limit,
        )

    async def newest_posts_by(self, conn: asyncpg.Connection, author_id: UUID, limit: int) -> list[asyncpg.Record]:
        """(id, author_id, created_at) of the newest posts of one author."""
        return await conn.fetch(
            "SELECT p.id, p.author_id, p.created_at FROM posts p WHERE p.author_id = $1 "
            "ORDER BY p.created_at DESC, p.id DESC LIMIT $2",
            author_id, limit,
        )
