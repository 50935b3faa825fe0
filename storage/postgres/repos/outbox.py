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
