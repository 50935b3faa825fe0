"""DomainEvent <-> message body (JSON)."""
from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson

from kernel.timefmt import iso
from server.bus.types import DomainEvent


def event_from_outbox_row(row: Any) -> DomainEvent:
    return DomainEvent(id=str(row["id"]), type=row["event_type"], payload=row["payload"],
                       created_at=iso(row["created_at"]))


def encode_event(event: DomainEvent) -> bytes:
    return orjson.dumps({"id": event.id, "type": event.type, "payload": event.payload,
                         "created_at": event.created_at})


def decode_event(body: bytes) -> DomainEvent:
    """Raises ValueError for a body that is not a domain event."""
    try:
        data = orjson.loads(body)
        UUID(data["id"])
        event = DomainEvent(id=data["id"], type=str(data["type"]), payload=dict(data["payload"]),
                            created_at=str(data["created_at"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a domain event: {exc}") from exc
    return event
