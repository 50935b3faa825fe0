"""The transactional outbox."""
from __future__ import annotations

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

    async def erase_user(self, conn: asyncpg.Connection, user_id: str, id_fields: list[str],
                         id_list_fields: list[str]) -> tuple[int, int]:
        """Erasure: no event names the user any more, found by the payload fields that
        hold user ids (``id_fields``: one id, ``id_list_fields``: arrays of ids), never by
        text. Events about the user (an id field is theirs) are deleted, delivered or
        not: a consumer would only act on someone who is gone. An event still in flight
        that merely lists them among others (attendees of someone else's event) loses
        them from the list and is delivered to the rest; delivered ones are deleted.
        Returns (deleted, redacted). Call in one transaction."""
        redacted = await conn.execute(
            "UPDATE outbox o SET payload = (SELECT jsonb_object_agg(f.key, CASE WHEN f.key = ANY($3::text[]) "
            "AND jsonb_typeof(f.value) = 'array' THEN f.value - $1::text ELSE f.value END) "
            "FROM jsonb_each(o.payload) f) "
            "WHERE o.published_at IS NULL AND jsonb_typeof(o.payload) = 'object' "
            "AND EXISTS (SELECT 1 FROM jsonb_each(o.payload) f WHERE f.key = ANY($3::text[]) "
            "AND jsonb_typeof(f.value) = 'array' AND f.value @> jsonb_build_array($1::text)) "
            "AND NOT EXISTS (SELECT 1 FROM jsonb_each(o.payload) f WHERE f.key = ANY($2::text[]) "
            "AND f.value = to_jsonb($1::text))",
            user_id, id_fields, id_list_fields,
        )
        deleted = await conn.execute(
            "DELETE FROM outbox o WHERE jsonb_typeof(o.payload) = 'object' AND EXISTS "
            "(SELECT 1 FROM jsonb_each(o.payload) f WHERE (f.key = ANY($2::text[]) AND f.value = to_jsonb($1::text)) "
            "OR (f.key = ANY($3::text[]) AND jsonb_typeof(f.value) = 'array' "
            "AND f.value @> jsonb_build_array($1::text)))",
            user_id, id_fields, id_list_fields,
        )
        return int(deleted.split()[-1]), int(redacted.split()[-1])

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

    async def delete_delivered(self, conn: asyncpg.Connection, event_ids: list[UUID]) -> None:
        """Delivered events not kept for the retention (see ``FORGOTTEN_ON_DELIVERY``)."""
        await conn.execute("DELETE FROM outbox WHERE id = ANY($1::uuid[])", event_ids)

    async def count_unpublished(self, conn: asyncpg.Connection) -> int:
        return await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")

    async def delete_published_before(self, conn: asyncpg.Connection, seconds: float) -> int:
        result = await conn.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)", seconds
        )
        return int(result.split()[-1])
