"""The transactional outbox."""
from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg


class OutboxRepo:
    async def add(self, conn: asyncpg.Connection, event_type: str, payload: dict[str, Any]) -> UUID:
        """Record a domain event; call inside the transaction of the change that caused it."""
        return await conn.fetchval(
            "INSERT INTO outbox (event_type, payload) VALUES ($1, $2) RETURNING id", event_type, payload
        )

    async def delete_published_before(self, conn: asyncpg.Connection, cutoff, batch: int = 5000) -> int:
        """Retention: published events older than ``cutoff`` (one batch; call until 0)."""
        result = await conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at IS NOT NULL "
            "AND published_at < $1 LIMIT $2)",
            cutoff, batch,
        )
        return int(result.split()[-1])

    async def delete_published_mentioning(self, conn: asyncpg.Connection, needles: list[str]) -> int:
        """Erasure: published events whose payload names the user (unpublished ones are
        still in flight and are left for the relay; retention removes them later)."""
        result = await conn.execute(
            "DELETE FROM outbox WHERE published_at IS NOT NULL AND EXISTS "
            "(SELECT 1 FROM unnest($1::text[]) n WHERE strpos(lower(payload::text), lower(n)) > 0)",
            needles,
        )
        return int(result.split()[-1])

    async def delete_processed_before(self, conn: asyncpg.Connection, cutoff, batch: int = 5000) -> int:
        """Retention of the consumers' idempotency records."""
        result = await conn.execute(
            "DELETE FROM processed_events WHERE (consumer, event_id) IN (SELECT consumer, event_id "
            "FROM processed_events WHERE processed_at < $1 LIMIT $2)",
            cutoff, batch,
        )
        return int(result.split()[-1])
