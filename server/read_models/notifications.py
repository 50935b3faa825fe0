"""Read models of the notifications context. ``Notification`` is also what the
real-time ``notification:new`` event carries."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
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
    created_at: Annotated[str, Field(description="When it was created or, for a group, when it last grew.")]
    metadata: NotificationMetadata
    # Grouped notifications only (likes of a post, comments on a post, new followers).
    group_key: NotRequired[Annotated[str, Field(
        description="What the group is about, e.g. `like:<post id>`; on grouped notifications only.")]]
    count: NotRequired[Annotated[int, Field(ge=1, description="How many people the group counts.")]]
    actor_ids: NotRequired[Annotated[list[str], Field(
        max_length=3, description="The most recent of them, newest first.")]]


class NotificationList(TypedDict):
    items: list[Notification]
    next_cursor: str | None


class UnreadCount(TypedDict):
    count: int


class MarkedAllRead(TypedDict):
    """How many notifications were unread and are read now."""

    updated: int
