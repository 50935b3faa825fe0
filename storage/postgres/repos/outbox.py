"""The transactional outbox."""
from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

# The channel the outbox trigger (migration 0003) notifies on every insert.
OUTBOX_CHANNEL = "pulse_outbox"


class OutboxRepo:
    async def add(self, conn: asyncpg.Connection, event_type: str, payload: dict[str, Any]) -> UUID:
        """Record a domain event; call inside the transaction of the change that caused it."""
        return await conn.fetchval(
            "INSERT INTO outbox (event_type, payload) VALUES ($1, $2) RETURNING id", event_type, payload
        )

    async def delete_published_mentioning(self, conn: asyncpg.Connection, needles: list[str],
                                          created_before: datetime) -> int:
        """Erasure: published events created up to ``created_before`` whose payload names
        the user. Unpublished ones are still in flight and are left for the relay, like
        the events the purge itself emits; retention removes them later."""
        result = await conn.execute(
            "DELETE FROM outbox WHERE published_at IS NOT NULL AND created_at <= $2 AND EXISTS "
            "(SELECT 1 FROM unnest($1::text[]) n WHERE strpos(lower(payload::text), lower(n)) > 0)",
            needles, created_before,
        )
        return int(result.split()[-1])

    async def lock_unpublished(self, conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
        """The oldest unpublished events, locked for this transaction; rows another relay
        holds are skipped, so concurrent relays never take the same row."""
        return await conn.fetch(
            "SELECT id, event_type, payload, created_at FROM outbox WHERE published_at IS NULL "
            "ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED",
            limit,
        )

    async def mark_published(self, conn: asyncpg.Connection, event_ids: list[UUID]) -> None:
        await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::uuid[])", event_ids)

    async def count_unpublished(self, conn: asyncpg.Connection) -> int:
        return await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")

    async def delete_published_before(self, conn: asyncpg.Connection, seconds: float) -> int:
        result = await conn.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)", seconds
        )
        return int(result.split()[-1])
