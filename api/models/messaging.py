"""Request and response bodies of conversations and messages."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from server.services.messaging import MAX_BODY_CHARS, MAX_CLIENT_ID_CHARS, MAX_MEMBERS, MAX_TITLE_CHARS

Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ConversationCreateIn(BaseModel):
    # The others: the caller is always a member.
    member_ids: list[Id] = Field(..., min_length=1, max_length=MAX_MEMBERS)
    title: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TITLE_CHARS)] | None = None


class MessageOut(BaseModel):
    id: str
    conversation_id: str
    sender_id: str
    body: str
    client_id: str
    created_at: str


class ConversationOut(BaseModel):
    id: str
    kind: Literal["direct", "group"]
    title: str | None
    member_ids: list[str]
    created_at: str
    last_message: MessageOut | None
    unread_count: int


class ConversationList(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None


class MessagesQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    # A message id: the page holds messages older than it. ``cursor`` is the same thing
    # under the name every list uses (``next_cursor`` of the previous page).
    before: Id | None = None
    cursor: Id | None = None


class MessageList(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


class MessageSendIn(BaseModel):
    body: Annotated[str, StringConstraints(min_length=1, max_length=MAX_BODY_CHARS)]
    # Retries with the same client_id return the stored message (idempotent send).
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CLIENT_ID_CHARS)] | None = None


class ReadIn(BaseModel):
    message_id: Id


class ReadOut(BaseModel):
    conversation_id: str
    last_read_message_id: str
