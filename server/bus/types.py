"""Domain events: the envelope and the consumer interface. The event types and their
payloads are catalogued in server/bus/catalogue.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from server.bus.catalogue import USER_PURGED

# The payload fields (of the catalogue's events) that hold a user id, and those holding
# lists of user ids: erasure finds the events naming a user through these only
# (``OutboxRepo.erase_user``).
USER_ID_FIELDS = ("user_id", "author_id", "post_author_id", "actor_id", "follower_id", "followee_id",
                  "host_id")
USER_ID_LIST_FIELDS = ("attendee_ids",)
# Deleted from the outbox once delivered instead of kept for the retention: they name a
# user who is gone by the time they are published.
FORGOTTEN_ON_DELIVERY = frozenset({USER_PURGED})


@dataclass(frozen=True)
class DomainEvent:
    id: str
    type: str
    payload: dict[str, Any]
    created_at: str  # ISO 8601 UTC


@dataclass(frozen=True)
class Consumer:
    """A named handler of some event types. The name keys its durable queue and its
    record of processed event ids, so it must never change once deployed."""

    name: str
    event_types: tuple[str, ...]
    handle: Callable[[DomainEvent], Awaitable[None]]
