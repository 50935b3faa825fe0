"""The rest of the real-time contract (API.md "Real time") as pydantic models: the
CONNECT ``auth``, the acknowledgements and the server-to-client events. The client
events' payloads are realtime/models.py (what the handlers validate with); the message
and notification inside events are the services' read models (``server.read_models``),
the same the REST responses are written with. realtime/asyncapi.py builds /asyncapi.json
from these."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from server.read_models.messaging import Message
from server.read_models.notifications import Notification


class ConnectAuth(BaseModel):
    """The Socket.IO CONNECT packet's data."""

    token: str = Field(description="A bearer token from register or login.")
    offset: str | None = Field(None, description="The last `offset` this client saw: the events after it are "
                                                "replayed, in order, before new ones (or `resync` is sent).")


class ConnectAccepted(BaseModel):
    sid: str


class ConnectRefused(BaseModel):
    """The data of the CONNECT_ERROR packet (`connect_error` in Socket.IO clients)."""

    message: str = Field(description="`unauthorized` for a bad or missing token; `too_many_sockets` beyond "
                                     "the per-user limit; otherwise the reason, e.g. a store being unavailable.")


class AckError(BaseModel):
    status: int
    title: str
    detail: str


class AckFailed(BaseModel):
    ok: Literal[False]
    error: AckError
    retry_after: int | None = Field(None, description="Seconds to wait, when rate limited (status 429).")


class AckOk(BaseModel):
    ok: Literal[True]


class MessageSendAck(BaseModel):
    ok: Literal[True]
    message: Message


class PresenceQueryAck(BaseModel):
    ok: Literal[True]
    online: list[str]


class MessageNewEvent(BaseModel):
    offset: str
    message: Message


class MessageReadEvent(BaseModel):
    offset: str
    conversation_id: str
    user_id: str
    message_id: str


class TypingEvent(BaseModel):
    conversation_id: str
    user_id: str
    typing: bool


class NotificationNewEvent(BaseModel):
    offset: str
    notification: Notification


class ResyncEvent(BaseModel):
    reason: str = Field(description="Why a replay was impossible, e.g. `offset_too_old`, `invalid_offset`, "
                                    "`events_missed`. The client refetches over REST.")
