"""Payloads of the client-to-server Socket.IO events (contract: API.md "Real time")."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr


class SocketPayload(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


# As over REST: no NUL characters in text we store (PostgreSQL cannot keep them).
NO_NUL = r"^[^\x00]*$"


class MessageSend(SocketPayload):
    conversation_id: StrictStr = Field(min_length=1, max_length=64)
    body: StrictStr = Field(min_length=1, max_length=4000, pattern=NO_NUL)
    client_id: StrictStr = Field(min_length=1, max_length=100, pattern=NO_NUL)


class MessageRead(SocketPayload):
    conversation_id: StrictStr = Field(min_length=1, max_length=64)
    message_id: StrictStr = Field(min_length=1, max_length=64)


class Typing(SocketPayload):
    conversation_id: StrictStr = Field(min_length=1, max_length=64)
    typing: StrictBool


class PresenceQuery(SocketPayload):
    user_ids: list[StrictStr] = Field(max_length=100)
