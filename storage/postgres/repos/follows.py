"""The social graph: who follows whom."""
from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg


class FollowsRepo:
    async def insert(self, conn: asyncpg.Connection, follower_id: UUID, followee_id: UUID) -> bool:
        """True if the follow is new (False: it already existed)."""
        inserted = await conn.fetchval(
            "INSERT INTO follows (follower_id, followee_id) VALUES ($1, $2) "
            "ON CONFLICT (follower_id, followee_id) DO NOTHING RETURNING true",
            follower_id, followee_id,
        )
        return bool(inserted)

    async def delete(self, conn: asyncpg.Connection, follower_id: UUID, followee_id: UUID) -> bool:
        """True if a follow was removed."""
        deleted = await conn.fetchval(
            "DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2 RETURNING true",
            follower_id, followee_id,
        )
        return bool(deleted)

    async def exists(self, conn: asyncpg.Connection, follower_id: UUID, followee_id: UUID) -> bool:
        return await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM follows WHERE follower_id = $1 AND followee_id = $2)",
            follower_id, followee_id,
        )

    async def list_followers(
        self, conn: asyncpg.Connection, user_id: UUID, *, after: tuple[datetime, UUID] | None, limit: int,
    ) -> list[asyncpg.Record]:
        """Active followers of ``user_id``, newest follow first: rows of (user_id, created_at)."""
        return await conn.fetch(
            "SELECT f.follower_id AS user_id, f.created_at FROM follows f "
            "JOIN users u ON u.id = f.follower_id AND u.status = 'active' "
            "WHERE f.followee_id = $1 "
            "AND ($2::timestamptz IS NULL OR (f.created_at, f.follower_id) < ($2, $3::uuid)) "
            "ORDER BY f.created_at DESC, f.follower_id DESC LIMIT $4",
            user_id, after[0] if after else None, after[1] if after else None, limit,
        )

    async def list_following(
        self, conn: asyncpg.Connection, user_id: UUID, *, after: tuple[datetime, UUID] | None, limit: int,
    ) -> list[asyncpg.Record]:
        """Active users ``user_id`` follows, newest follow first: rows of (user_id, created_at)."""
        return await conn.fetch(
            "SELECT f.followee_id AS user_id, f.created_at FROM follows f "
            "JOIN users u ON u.id = f.followee_id AND u.status = 'active' "
            "WHERE f.follower_id = $1 "
            "AND ($2::timestamptz IS NULL OR (f.created_at, f.followee_id) < ($2, $3::uuid)) "
            "ORDER BY f.created_at DESC, f.followee_id DESC LIMIT $4",
            user_id, after[0] if after else None, after[1] if after else None, limit,
        )

    async def follower_ids(self, conn: asyncpg.Connection, user_id: UUID) -> list[UUID]:
        """Every follower of ``user_id`` (feed fan-out, notifications), pending ones too."""
        rows = await conn.fetch("SELECT follower_id FROM follows WHERE followee_id = $1", user_id)
        return [r["follower_id"] for r in rows]

    async def followee_ids(self, conn: asyncpg.Connection, user_id: UUID) -> list[UUID]:
        rows = await conn.fetch("SELECT followee_id FROM follows WHERE follower_id = $1", user_id)
        return [r["followee_id"] for r in rows]

    async def followed_among(self, conn: asyncpg.Connection, follower_id: UUID, user_ids: list[UUID]) -> list[UUID]:
        """Those of ``user_ids`` that ``follower_id`` follows."""
        rows = await conn.fetch(
            "SELECT followee_id FROM follows WHERE follower_id = $1 AND followee_id = ANY($2::uuid[])",
            follower_id, user_ids,
        )
        return [r["followee_id"] for r in rows]

    async def followers_among(self, conn: asyncpg.Connection, followee_id: UUID, user_ids: list[UUID]) -> list[UUID]:
        """Those of ``user_ids`` who follow ``followee_id``."""
        rows = await conn.fetch(
            "SELECT follower_id FROM follows WHERE followee_id = $1 AND follower_id = ANY($2::uuid[])",
            followee_id, user_ids,
        )
        return [r["follower_id"] for r in rows]

    async def delete_all_of_user(self, conn: asyncpg.Connection, user_id: UUID) -> list[asyncpg.Record]:
        """Removes both directions (erasure); returns the removed (follower_id, followee_id)
        pairs so the caller can fix the others' counters."""
        return await conn.fetch(
            "DELETE FROM follows WHERE follower_id = $1 OR followee_id = $1 RETURNING follower_id, followee_id",
            user_id,
        )

    async def page_of_user(self, conn: asyncpg.Connection, user_id: UUID, direction: str,
                           after: tuple[datetime, UUID] | None, limit: int) -> list[asyncpg.Record]:
        """Export: a page of the user's follows, oldest first, whatever the other side's
        status: ``direction`` "following" (rows of followee) or "followers" (of follower),
        as (user_id, created_at)."""
        if direction == "following":
            return await conn.fetch(
                "SELECT followee_id AS user_id, created_at FROM follows WHERE follower_id = $1 "
                "AND ($2::timestamptz IS NULL OR (created_at, followee_id) > ($2, $3::uuid)) "
                "ORDER BY created_at, followee_id LIMIT $4",
                user_id, after[0] if after else None, after[1] if after else None, limit,
            )
        return await conn.fetch(
            "SELECT follower_id AS user_id, created_at FROM follows WHERE followee_id = $1 "
            "AND ($2::timestamptz IS NULL OR (created_at, follower_id) > ($2, $3::uuid)) "
            "ORDER BY created_at, follower_id LIMIT $4",
            user_id, after[0] if after else None, after[1] if after else None, limit,
        )
