"""Users and profiles (one aggregate: a profile never exists without its user)."""
from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from kernel.errors import Conflict

_USER_COLUMNS = """
    u.id, u.email, u.username, u.status, u.created_at, u.purge_after,
    p.display_name, p.bio, p.avatar_url, p.followers_count, p.following_count, p.posts_count
"""


class UsersRepo:
    async def insert_user_with_profile(
        self, conn: asyncpg.Connection, *, email: str, username: str, password_hash: str, display_name: str
    ) -> asyncpg.Record:
        try:
            user_id = await conn.fetchval(
                "INSERT INTO users (email, username, password_hash) VALUES ($1, $2, $3) RETURNING id",
                email, username, password_hash,
            )
        except asyncpg.UniqueViolationError as exc:
            field = "email" if "email" in (exc.constraint_name or "") else "username"
            raise Conflict(f"That {field} is already taken.") from exc
        await conn.execute(
            "INSERT INTO profiles (user_id, display_name) VALUES ($1, $2)", user_id, display_name
        )
        return await self.get_by_id(conn, user_id, include_pending=True)

    async def get_by_id(self, conn: asyncpg.Connection, user_id: UUID, *, include_pending: bool = False) -> asyncpg.Record | None:
        return await conn.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users u JOIN profiles p ON p.user_id = u.id "
            "WHERE u.id = $1 AND (u.status = 'active' OR $2)",
            user_id, include_pending,
        )

    async def get_by_username(self, conn: asyncpg.Connection, username: str) -> asyncpg.Record | None:
        return await conn.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users u JOIN profiles p ON p.user_id = u.id "
            "WHERE lower(u.username) = lower($1) AND u.status = 'active'",
            username,
        )

    async def get_many_by_ids(self, conn: asyncpg.Connection, user_ids: list[UUID]) -> list[asyncpg.Record]:
        return await conn.fetch(
            f"SELECT {_USER_COLUMNS} FROM users u JOIN profiles p ON p.user_id = u.id "
            "WHERE u.id = ANY($1::uuid[]) AND u.status = 'active'",
            user_ids,
        )

    async def get_credentials_by_login(self, conn: asyncpg.Connection, login: str) -> asyncpg.Record | None:
        """The account a login (email or username) names, with its password hash."""
        return await conn.fetchrow(
            "SELECT id, password_hash, status, purge_after FROM users "
            "WHERE lower(email) = lower($1) OR lower(username) = lower($1) LIMIT 1",
            login,
        )

    async def get_password_hash(self, conn: asyncpg.Connection, user_id: UUID) -> str | None:
        return await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)

    async def set_password_hash(self, conn: asyncpg.Connection, user_id: UUID, password_hash: str) -> None:
        await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)

    async def update_profile(self, conn: asyncpg.Connection, user_id: UUID, changes: dict[str, Any]) -> None:
        # Fixed statement: each column keeps its value unless the flag says it changes.
        await conn.execute(
            """
            UPDATE profiles SET
                display_name = CASE WHEN $2 THEN $3 ELSE display_name END,
                bio          = CASE WHEN $4 THEN $5 ELSE bio END,
                avatar_url   = CASE WHEN $6 THEN $7 ELSE avatar_url END,
                updated_at   = now()
            WHERE user_id = $1
            """,
            user_id,
            "display_name" in changes, changes.get("display_name"),
            "bio" in changes, changes.get("bio"),
            "avatar_url" in changes, changes.get("avatar_url"),
        )

    async def add_to_counters(
        self, conn: asyncpg.Connection, user_id: UUID, *, followers: int = 0, following: int = 0, posts: int = 0
    ) -> None:
        await conn.execute(
            "UPDATE profiles SET followers_count = followers_count + $2, following_count = following_count + $3, "
            "posts_count = posts_count + $4 WHERE user_id = $1",
            user_id, followers, following, posts,
        )

    async def add_to_counters_in_order(
        self, conn: asyncpg.Connection, changes: list[tuple[UUID, dict[str, int]]]
    ) -> None:
        """Several users' counters in one round trip (a pipelined executemany), the rows
        updated — and locked — in user id order whatever the order given."""
        await conn.executemany(
            "UPDATE profiles SET followers_count = followers_count + $2, following_count = following_count + $3, "
            "posts_count = posts_count + $4 WHERE user_id = $1",
            [(user_id, c.get("followers", 0), c.get("following", 0), c.get("posts", 0))
             for user_id, c in sorted(changes, key=lambda change: change[0])],
        )

    async def followers_count(self, conn: asyncpg.Connection, user_id: UUID) -> int | None:
        return await conn.fetchval("SELECT followers_count FROM profiles WHERE user_id = $1", user_id)

    async def mark_pending_erasure(self, conn: asyncpg.Connection, user_id: UUID, purge_after: datetime) -> None:
        await conn.execute(
            "UPDATE users SET status = 'pending_erasure', erasure_requested_at = now(), purge_after = $2 WHERE id = $1",
            user_id, purge_after,
        )

    async def restore(self, conn: asyncpg.Connection, user_id: UUID) -> None:
        await conn.execute(
            "UPDATE users SET status = 'active', erasure_requested_at = NULL, purge_after = NULL WHERE id = $1",
            user_id,
        )

    async def lock_erasure_state(self, conn: asyncpg.Connection, user_id: UUID) -> asyncpg.Record | None:
        """The user row (locked against a concurrent restore or purge) with its erasure state."""
        return await conn.fetchrow(
            "SELECT id, status, purge_after FROM users WHERE id = $1 FOR UPDATE", user_id
        )

    async def due_for_purge(self, conn: asyncpg.Connection, now: datetime, limit: int) -> list[UUID]:
        """Users whose recovery window is over, the oldest first."""
        rows = await conn.fetch(
            "SELECT id FROM users WHERE status = 'pending_erasure' AND purge_after <= $1 "
            "ORDER BY purge_after LIMIT $2",
            now, limit,
        )
        return [r["id"] for r in rows]

    async def delete(self, conn: asyncpg.Connection, user_id: UUID) -> None:
        # Profiles, sessions and every row that references the user cascade.
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
