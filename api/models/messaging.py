"""Request bodies and queries of conversations and messages (responses:
``server.read_models.messaging``)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from server.services.messaging import MAX_BODY_CHARS, MAX_CLIENT_ID_CHARS, MAX_MEMBERS, MAX_TITLE_CHARS

Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ConversationCreateIn(BaseModel):
    # The others: the caller is always a member.
    member_ids: list[Id] = Field(..., min_length=1, max_length=MAX_MEMBERS)
    title: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TITLE_CHARS)] | None = None


class MessagesQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    # A message id: the page holds messages older than it. ``cursor`` is the same thing
    # under the name every list uses (``next_cursor`` of the previous page).
    before: Id | None = None
    cursor: Id | None = None


class MessageSendIn(BaseModel):
    body: Annotated[str, StringConstraints(min_length=1, max_length=MAX_BODY_CHARS)]
    # Retries with the same client_id return the stored message (idempotent send).
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CLIENT_ID_CHARS)] | None = None


class ReadIn(BaseModel):
    message_id: Id
