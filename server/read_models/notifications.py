"""Read models of the notifications context. ``Notification`` is also what the
real-time ``notification:new`` event carries."""
from __future__ import annotations

from typing import Literal

from typing_extensions import NotRequired, TypedDict

NotificationType = Literal["welcome", "like", "comment", "follow", "rsvp", "event_cancelled", "message"]


class NotificationMetadata(TypedDict):
    """What the notification is about; only the keys that apply are present."""

    post_id: NotRequired[str]
    actor_id: NotRequired[str]
    event_id: NotRequired[str]
    conversation_id: NotRequired[str]


class Notification(TypedDict):
    id: str
    type: NotificationType
    message: str
    read: bool
    created_at: str
    metadata: NotificationMetadata


class NotificationList(TypedDict):
    items: list[Notification]
    next_cursor: str | None


class UnreadCount(TypedDict):
    count: int


class MarkedAllRead(TypedDict):
    """How many notifications were unread and are read now."""

    updated: int
