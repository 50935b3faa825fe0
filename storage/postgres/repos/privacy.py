"""The privacy context's tables: the append-only audit log and the erasure sagas (the
users rows they are about are the users context's: ``UsersRepo``)."""
from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg


class AuditRepo:
    async def append(self, conn: asyncpg.Connection, action: str, subject: str, details: dict[str, Any]) -> None:
        await conn.execute(
            "INSERT INTO audit_log (action, subject, details) VALUES ($1, $2, $3)", action, subject, details
        )

    async def page_for_subjects(
        self, conn: asyncpg.Connection, subjects: list[str], after_id: int, limit: int
    ) -> list[asyncpg.Record]:
        return await conn.fetch(
            "SELECT id, at, action, details FROM audit_log WHERE subject = ANY($1::text[]) AND id > $2 "
            "ORDER BY id LIMIT $3",
            subjects, after_id, limit,
        )


class ErasureSagasRepo:
    async def open_user_ids(self, conn: asyncpg.Connection) -> list[UUID]:
        """The users whose saga is still open (running or stuck)."""
        rows = await conn.fetch("SELECT user_id FROM erasure_sagas WHERE status <> 'completed'")
        return [r["user_id"] for r in rows]

    async def get_open(self, conn: asyncpg.Connection, user_id: UUID) -> asyncpg.Record | None:
        return await conn.fetchrow(
            "SELECT id, subject, status FROM erasure_sagas WHERE user_id = $1", user_id
        )

    async def open_saga(self, conn: asyncpg.Connection, user_id: UUID, subject: str, steps: list[str]) -> UUID:
        saga_id = await conn.fetchval(
            "INSERT INTO erasure_sagas (user_id, subject) VALUES ($1, $2) RETURNING id", user_id, subject
        )
        await self.add_missing_steps(conn, saga_id, steps)
        return saga_id

    async def add_missing_steps(self, conn: asyncpg.Connection, saga_id: UUID, steps: list[str]) -> None:
        """Steps contributed after the saga started (a deploy in between) join it; the
        positions follow the current registry order."""
        await conn.executemany(
            "INSERT INTO erasure_steps (saga_id, position, step) VALUES ($1, $2, $3) "
            "ON CONFLICT (saga_id, step) DO UPDATE SET position = EXCLUDED.position",
            [(saga_id, position, name) for position, name in enumerate(steps)],
        )

    async def steps(self, conn: asyncpg.Connection, saga_id: UUID) -> list[asyncpg.Record]:
        return await conn.fetch(
            "SELECT step, status, attempts, last_error FROM erasure_steps WHERE saga_id = $1 ORDER BY position",
            saga_id,
        )

    async def mark_step_done(self, conn: asyncpg.Connection, saga_id: UUID, step: str) -> int:
        return await conn.fetchval(
            "UPDATE erasure_steps SET status = 'done', attempts = attempts + 1, last_error = NULL, "
            "updated_at = now() WHERE saga_id = $1 AND step = $2 RETURNING attempts",
            saga_id, step,
        )

    async def mark_step_failed(self, conn: asyncpg.Connection, saga_id: UUID, step: str, error: str) -> int:
        return await conn.fetchval(
            "UPDATE erasure_steps SET status = 'failed', attempts = attempts + 1, last_error = $3, "
            "updated_at = now() WHERE saga_id = $1 AND step = $2 RETURNING attempts",
            saga_id, step, error,
        )

    async def set_status(self, conn: asyncpg.Connection, saga_id: UUID, status: str) -> None:
        await conn.execute(
            "UPDATE erasure_sagas SET status = $2, updated_at = now() WHERE id = $1", saga_id, status
        )

    async def complete(self, conn: asyncpg.Connection, saga_id: UUID) -> None:
        """The user is gone: forget their id, keep the pseudonymous record of the purge."""
        await conn.execute(
            "UPDATE erasure_sagas SET status = 'completed', user_id = NULL, finished_at = now(), "
            "updated_at = now() WHERE id = $1",
            saga_id,
        )
        await conn.execute("UPDATE erasure_steps SET last_error = NULL WHERE saga_id = $1", saga_id)

    async def list_unfinished(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "SELECT s.id, s.subject, s.status, s.started_at, "
            "       (SELECT jsonb_agg(jsonb_build_object('step', st.step, 'status', st.status, "
            "                'attempts', st.attempts, 'last_error', st.last_error) ORDER BY st.position) "
            "        FROM erasure_steps st WHERE st.saga_id = s.id) AS steps "
            "FROM erasure_sagas s WHERE s.status <> 'completed' ORDER BY s.started_at"
        )

    async def has_saga(self, conn: asyncpg.Connection, user_id: UUID) -> bool:
        return await conn.fetchval("SELECT EXISTS (SELECT 1 FROM erasure_sagas WHERE user_id = $1)", user_id)
