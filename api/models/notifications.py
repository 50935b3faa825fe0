"""Response bodies and queries of the notifications endpoints."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from api.models.common import ListQuery


class NotificationMetadata(BaseModel):
    post_id: str | None = None
    actor_id: str | None = None
    event_id: str | None = None
    conversation_id: str | None = None


class NotificationOut(BaseModel):
    id: str
    type: Literal["welcome", "like", "comment", "follow", "rsvp", "event_cancelled", "message"]
    message: str
    read: bool
    created_at: str
    metadata: NotificationMetadata


class NotificationList(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None


class NotificationsQuery(ListQuery):
    unread: bool = False


class UnreadCount(BaseModel):
    count: int


class ReadAllOut(BaseModel):
    updated: int
