"""Read models of the messaging context. ``Message`` is also what the real-time
``message:new`` event and the ``message:send`` acknowledgement carry."""
from __future__ import annotations

from typing import Literal

from typing_extensions import TypedDict


class Message(TypedDict):
    id: str
    conversation_id: str
    sender_id: str
    body: str
    client_id: str
    created_at: str


class MessageList(TypedDict):
    items: list[Message]
    next_cursor: str | None


class Conversation(TypedDict):
    """A conversation as one member sees it (``unread_count`` is theirs)."""

    id: str
    kind: Literal["direct", "group"]
    title: str | None
    member_ids: list[str]
    created_at: str
    last_message: Message | None
    unread_count: int


class ConversationList(TypedDict):
    items: list[Conversation]
    next_cursor: str | None


class ReadPosition(TypedDict):
    """A member's read position in a conversation."""

    conversation_id: str
    last_read_message_id: str
