"""Events and their RSVPs. Events hosted by users pending erasure are invisible."""
from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

_EVENT_COLUMNS = """
    e.id, e.host_id, e.title, e.description, e.starts_at, e.ends_at, e.location, e.capacity,
    e.going_count, e.created_at, u.username AS host_username, p.display_name AS host_display_name
"""
_EVENT_FROM = """
    FROM events e JOIN users u ON u.id = e.host_id AND u.status = 'active'
    JOIN profiles p ON p.user_id = e.host_id
"""


class EventsRepo:
    async def insert(
        self, conn: asyncpg.Connection, *, host_id: UUID, title: str, description: str | None,
        starts_at: datetime, ends_at: datetime | None, location: str | None, capacity: int | None,
    ) -> UUID:
        return await conn.fetchval(
            "INSERT INTO events (host_id, title, description, starts_at, ends_at, location, capacity) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            host_id, title, description, starts_at, ends_at, location, capacity,
        )

    async def get(self, conn: asyncpg.Connection, event_id: UUID) -> asyncpg.Record | None:
        return await conn.fetchrow(f"SELECT {_EVENT_COLUMNS} {_EVENT_FROM} WHERE e.id = $1", event_id)

    async def lock(self, conn: asyncpg.Connection, event_id: UUID) -> asyncpg.Record | None:
        """The visible event's row, locked until the transaction ends (serialises RSVPs
        and edits of one event)."""
        return await conn.fetchrow(
            "SELECT e.id, e.host_id, e.title, e.starts_at, e.ends_at, e.capacity, e.going_count "
            "FROM events e JOIN users u ON u.id = e.host_id AND u.status = 'active' "
            "WHERE e.id = $1 FOR UPDATE OF e",
            event_id,
        )

    async def list_upcoming(
        self, conn: asyncpg.Connection, *, start: datetime, end: datetime | None,
        after: tuple[datetime, UUID] | None, limit: int,
    ) -> list[asyncpg.Record]:
        """Events starting in [start, end], soonest first, after the keyset ``after``."""
        return await conn.fetch(
            f"SELECT {_EVENT_COLUMNS} {_EVENT_FROM} "
            "WHERE e.starts_at >= $1 AND ($2::timestamptz IS NULL OR e.starts_at <= $2) "
            "AND ($3::timestamptz IS NULL OR (e.starts_at, e.id) > ($3, $4::uuid)) "
            "ORDER BY e.starts_at, e.id LIMIT $5",
            start, end, after[0] if after else None, after[1] if after else None, limit,
        )

    async def update(self, conn: asyncpg.Connection, event_id: UUID, changes: dict[str, Any]) -> None:
        # Fixed statement: each column keeps its value unless its flag says it changes.
        await conn.execute(
            """
            UPDATE events SET
                title       = CASE WHEN $2  THEN $3  ELSE title END,
                description = CASE WHEN $4  THEN $5  ELSE description END,
                starts_at   = CASE WHEN $6  THEN $7::timestamptz ELSE starts_at END,
                ends_at     = CASE WHEN $8  THEN $9::timestamptz ELSE ends_at END,
                location    = CASE WHEN $10 THEN $11 ELSE location END,
                capacity    = CASE WHEN $12 THEN $13::integer ELSE capacity END,
                updated_at  = now()
            WHERE id = $1
            """,
            event_id,
            "title" in changes, changes.get("title"),
            "description" in changes, changes.get("description"),
            "starts_at" in changes, changes.get("starts_at"),
            "ends_at" in changes, changes.get("ends_at"),
            "location" in changes, changes.get("location"),
            "capacity" in changes, changes.get("capacity"),
        )

    async def add_to_going_count(self, conn: asyncpg.Connection, event_id: UUID, delta: int) -> int:
        return await conn.fetchval(
            "UPDATE events SET going_count = going_count + $2 WHERE id = $1 RETURNING going_count", event_id, delta
        )

    async def delete(self, conn: asyncpg.Connection, event_id: UUID) -> None:
        await conn.execute("DELETE FROM events WHERE id = $1", event_id)

    async def page_by_host(self, conn: asyncpg.Connection, host_id: UUID,
                           after: tuple[datetime, UUID] | None, limit: int) -> list[asyncpg.Record]:
        """A page of every event a user hosts, whatever their status, oldest first (export)."""
        return await conn.fetch(
            "SELECT id, title, description, starts_at, ends_at, location, capacity, going_count, created_at "
            "FROM events WHERE host_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid)) "
            "ORDER BY created_at, id LIMIT $4",
            host_id, after[0] if after else None, after[1] if after else None, limit,
        )

    async def ids_by_host(self, conn: asyncpg.Connection, host_id: UUID, limit: int) -> list[UUID]:
        return [r["id"] for r in await conn.fetch("SELECT id FROM events WHERE host_id = $1 LIMIT $2", host_id, limit)]

    async def delete_returning_title(self, conn: asyncpg.Connection, event_id: UUID) -> str | None:
        """Erasure of the host: deletes the event (RSVPs cascade) whatever the host's status."""
        return await conn.fetchval("DELETE FROM events WHERE id = $1 RETURNING title", event_id)


class RsvpsRepo:
    async def get_status(self, conn: asyncpg.Connection, event_id: UUID, user_id: UUID) -> str | None:
        return await conn.fetchval("SELECT status FROM rsvps WHERE event_id = $1 AND user_id = $2", event_id, user_id)

    async def get_statuses(self, conn: asyncpg.Connection, event_ids: list[UUID], user_id: UUID) -> dict[UUID, str]:
        rows = await conn.fetch(
            "SELECT event_id, status FROM rsvps WHERE event_id = ANY($1::uuid[]) AND user_id = $2",
            event_ids, user_id,
        )
        return {r["event_id"]: r["status"] for r in rows}

    async def upsert(self, conn: asyncpg.Connection, event_id: UUID, user_id: UUID, status: str) -> None:
        await conn.execute(
            "INSERT INTO rsvps (event_id, user_id, status) VALUES ($1, $2, $3) "
            "ON CONFLICT (event_id, user_id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()",
            event_id, user_id, status,
        )

    async def upsert_counting_going(self, conn: asyncpg.Connection, event_id: UUID, user_id: UUID,
                                    status: str, going_delta: int) -> int:
        """``upsert`` and the event's going count moved by ``going_delta`` in one round
        trip (the caller holds the event's row lock: one statement less under it).
        Returns the new going count."""
        return await conn.fetchval(
            "WITH saved AS (INSERT INTO rsvps (event_id, user_id, status) VALUES ($1, $2, $3) "
            "ON CONFLICT (event_id, user_id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()) "
            "UPDATE events SET going_count = going_count + $4 WHERE id = $1 RETURNING going_count",
            event_id, user_id, status, going_delta,
        )

    async def delete(self, conn: asyncpg.Connection, event_id: UUID, user_id: UUID) -> str | None:
        """Removes the RSVP; returns the status it had (None if there was none)."""
        return await conn.fetchval(
            "DELETE FROM rsvps WHERE event_id = $1 AND user_id = $2 RETURNING status", event_id, user_id
        )

    async def list_attendees(
        self, conn: asyncpg.Connection, event_id: UUID, *, after: tuple[datetime, UUID] | None, limit: int,
    ) -> list[asyncpg.Record]:
        """RSVPs of active users, newest first, after the keyset ``after``."""
        return await conn.fetch(
            "SELECT r.user_id, r.status, r.created_at FROM rsvps r "
            "JOIN users u ON u.id = r.user_id AND u.status = 'active' "
            "WHERE r.event_id = $1 AND ($2::timestamptz IS NULL OR (r.created_at, r.user_id) < ($2, $3::uuid)) "
            "ORDER BY r.created_at DESC, r.user_id DESC LIMIT $4",
            event_id, after[0] if after else None, after[1] if after else None, limit,
        )

    async def attendee_ids(self, conn: asyncpg.Connection, event_id: UUID) -> list[UUID]:
        """Users who said going or interested (they hear about a cancellation)."""
        rows = await conn.fetch(
            "SELECT user_id FROM rsvps WHERE event_id = $1 AND status IN ('going', 'interested')", event_id
        )
        return [r["user_id"] for r in rows]

    async def delete_by_user(self, conn: asyncpg.Connection, user_id: UUID) -> list[UUID]:
        """Removes every RSVP of a user, keeping going counts exact (erasure); returns the
        events whose count changed."""
        rows = await conn.fetch(
            "WITH gone AS (DELETE FROM rsvps WHERE user_id = $1 RETURNING event_id, status) "
            "UPDATE events e SET going_count = going_count - 1 FROM gone "
            "WHERE e.id = gone.event_id AND gone.status = 'going' RETURNING e.id",
            user_id,
        )
        return [r["id"] for r in rows]

    async def page_by_user(self, conn: asyncpg.Connection, user_id: UUID,
                           after: tuple[datetime, UUID] | None, limit: int) -> list[asyncpg.Record]:
        """A page of every RSVP of a user, oldest first (export)."""
        return await conn.fetch(
            "SELECT r.event_id, e.title, r.status, r.created_at, r.updated_at FROM rsvps r "
            "JOIN events e ON e.id = r.event_id WHERE r.user_id = $1 "
            "AND ($2::timestamptz IS NULL OR (r.created_at, r.event_id) > ($2, $3::uuid)) "
            "ORDER BY r.created_at, r.event_id LIMIT $4",
            user_id, after[0] if after else None, after[1] if after else None, limit,
        )
