"""Sessions: opaque tokens, stored as their sha256."""
from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg


class SessionsRepo:
    async def insert(
        self, conn: asyncpg.Connection, *, token_hash: bytes, user_id: UUID, expires_at: datetime,
        user_agent: str | None, client_address: str | None,
    ) -> None:
        await conn.execute(
            "INSERT INTO sessions (token_hash, user_id, expires_at, user_agent, client_address) "
            "VALUES ($1, $2, $3, $4, $5)",
            token_hash, user_id, expires_at, user_agent, client_address,
        )

    async def get_live(self, conn: asyncpg.Connection, token_hash: bytes) -> asyncpg.Record | None:
        """The session if it exists, has not expired, and its user is active."""
        return await conn.fetchrow(
            "SELECT s.user_id, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id "
            "WHERE s.token_hash = $1 AND s.expires_at > now() AND u.status = 'active'",
            token_hash,
        )

    async def live_among(self, conn: asyncpg.Connection, token_hashes: list[bytes]) -> list[asyncpg.Record]:
        """Those sessions of ``token_hashes`` that are live (as ``get_live``): (token_hash, user_id, expires_at)."""
        return await conn.fetch(
            "SELECT s.token_hash, s.user_id, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id "
            "WHERE s.token_hash = ANY($1::bytea[]) AND s.expires_at > now() AND u.status = 'active'",
            token_hashes,
        )

    async def delete(self, conn: asyncpg.Connection, token_hash: bytes) -> None:
        await conn.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)

    async def delete_all_for_user(self, conn: asyncpg.Connection, user_id: UUID) -> list[bytes]:
        rows = await conn.fetch("DELETE FROM sessions WHERE user_id = $1 RETURNING token_hash", user_id)
        return [r["token_hash"] for r in rows]

    async def list_for_user(self, conn: asyncpg.Connection, user_id: UUID) -> list[asyncpg.Record]:
        return await conn.fetch(
            "SELECT created_at, expires_at, user_agent, client_address FROM sessions "
            "WHERE user_id = $1 AND expires_at > now() ORDER BY created_at DESC",
            user_id,
        )

    async def delete_expired(self, conn: asyncpg.Connection) -> int:
        result = await conn.execute("DELETE FROM sessions WHERE expires_at <= now()")
        return int(result.split()[-1])
