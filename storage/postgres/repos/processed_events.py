"""Which event ids each consumer has handled (makes redelivery harmless)."""
from __future__ import annotations

from uuid import UUID

import asyncpg


class ProcessedEventsRepo:
    async def was_processed(self, conn: asyncpg.Connection, consumer: str, event_id: UUID) -> bool:
        return await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2)",
            consumer, event_id,
        )

    async def record(self, conn: asyncpg.Connection, consumer: str, event_id: UUID) -> None:
        await conn.execute(
            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            consumer, event_id,
        )

    async def delete_older_than(self, conn: asyncpg.Connection, seconds: float) -> int:
        result = await conn.execute(
            "DELETE FROM processed_events WHERE processed_at < now() - make_interval(secs => $1)", seconds
        )
        return int(result.split()[-1])
