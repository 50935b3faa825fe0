"""Which authors the home feed does not (only) fan out on write (``feed_fanout_modes``)."""
from __future__ import annotations

from uuid import UUID

import asyncpg

# The advisory-lock class of threshold crossings (the second key is the author's hash):
# one crossing per author at a time, across instances.
_CROSSING_LOCK_CLASS = 0x66656564  # "feed"


class FanoutModesRepo:
    async def mode_of(self, conn: asyncpg.Connection, author_id: UUID) -> str | None:
        """'to_pull', 'pull' or 'to_push'; None: fanned out on write."""
        return await conn.fetchval("SELECT mode FROM feed_fanout_modes WHERE author_id = $1", author_id)

    async def modes_of(self, conn: asyncpg.Connection, author_ids: list[UUID]) -> dict[UUID, str]:
        rows = await conn.fetch(
            "SELECT author_id, mode FROM feed_fanout_modes WHERE author_id = ANY($1::uuid[])", author_ids)
        return {r["author_id"]: r["mode"] for r in rows}

    async def set_mode(self, conn: asyncpg.Connection, author_id: UUID, mode: str) -> None:
        await conn.execute(
            "INSERT INTO feed_fanout_modes (author_id, mode) VALUES ($1, $2) "
            "ON CONFLICT (author_id) DO UPDATE SET mode = EXCLUDED.mode, changed_at = now()",
            author_id, mode,
        )

    async def clear(self, conn: asyncpg.Connection, author_id: UUID) -> None:
        """Back to fan-out on write."""
        await conn.execute("DELETE FROM feed_fanout_modes WHERE author_id = $1", author_id)

    async def list_authors(self, conn: asyncpg.Connection) -> list[UUID]:
        """Every author not simply fanned out on write (a few: the large accounts)."""
        return [r["author_id"] for r in await conn.fetch("SELECT author_id FROM feed_fanout_modes")]

    async def merged_followees(self, conn: asyncpg.Connection, follower_id: UUID) -> list[UUID]:
        """The authors ``follower_id`` follows whose posts a feed read merges (any mode but
        plain fan-out: during a crossing both ways are written)."""
        rows = await conn.fetch(
            "SELECT m.author_id FROM follows f JOIN feed_fanout_modes m ON m.author_id = f.followee_id "
            "WHERE f.follower_id = $1",
            follower_id,
        )
        return [r["author_id"] for r in rows]

    async def try_lock_crossing(self, conn: asyncpg.Connection, author_id: UUID) -> bool:
        """A session advisory lock on the author's crossings (released with the session)."""
        return await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))",
                                   _CROSSING_LOCK_CLASS, str(author_id))
