"""Every consumer of domain events, gathered in one list.

Each context adds its consumers here (a name that never changes, the event types, and
an idempotent handler built from its service)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from server.bus.types import Consumer

if TYPE_CHECKING:
    from server.services import Services


def build_consumers(services: "Services") -> list[Consumer]:
    consumers: list[Consumer] = []
    consumers += services.posts.consumers()
    consumers.append(services.feed.consumer())
    consumers += services.notifications.consumers()
    return consumers
