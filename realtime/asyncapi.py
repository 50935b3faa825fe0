"""AsyncAPI 3.0 document of the real-time contract, served at /asyncapi.json.

Payload schemas come from the pydantic models the handlers validate with
(realtime/models.py) and those of realtime/contract.py, so the document cannot drift
from the code. One channel: the Socket.IO connection (Engine.IO v4 over WebSocket,
Socket.IO v5, default namespace). Each Socket.IO event is a message whose payload is
the event's single argument; an event with an acknowledgement is an operation with a
reply.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from realtime import contract
from realtime.models import MessageRead, MessageSend, PresenceQuery, Typing


@dataclass(frozen=True)
class ClientEvent:
    name: str
    payload: type[BaseModel]
    ack: type[BaseModel]
    summary: str


@dataclass(frozen=True)
class ServerEvent:
    name: str
    payload: type[BaseModel]
    summary: str


CLIENT_EVENTS = (
    ClientEvent("message:send", MessageSend, contract.MessageSendAck,
                "Send a message; idempotent on (sender, client_id): a retry acks the stored message."),
    ClientEvent("message:read", MessageRead, contract.AckOk,
                "Mark a message (and everything before it) read; the other members get `message:read`."),
    ClientEvent("typing", Typing, contract.AckOk,
                "Tell the other members of a conversation that you are typing, or stopped."),
    ClientEvent("presence:query", PresenceQuery, contract.PresenceQueryAck,
                "Which of these users are online (only users who share a conversation with you or whom "
                "you follow can be reported online)."),
)

SERVER_EVENTS = (
    ServerEvent("message:new", contract.MessageNewEvent,
                "A new message, to every member's sockets, the sender's included."),
    ServerEvent("message:read", contract.MessageReadEvent, "Another member read up to a message."),
    ServerEvent("typing", contract.TypingEvent, "Another member is typing, or stopped (not replayed)."),
    ServerEvent("notification:new", contract.NotificationNewEvent,
                "A new notification, or a grouped one that grew: a group is pushed at most once per "
                "PULSE_NOTIFICATION_PUSH_COALESCE_MS (default 1000), as it stands then."),
    ServerEvent("resync", contract.ResyncEvent,
                "A replay after the CONNECT `offset` is impossible: refetch over REST."),
)


def _key(event: str, prefix: str) -> str:
    """A component key (``^[a-zA-Z0-9.\\-_]+$``) for an event name such as ``message:send``."""
    return prefix + "".join(part[:1].upper() + part[1:] for part in event.replace(":", "-").split("-"))


def _ref(path: str) -> dict[str, str]:
    return {"$ref": path}


def _message(name: str, model: type[BaseModel], summary: str) -> dict[str, Any]:
    return {"name": name, "title": name, "summary": summary, "contentType": "application/json",
            "payload": _ref(f"#/components/schemas/{model.__name__}")}


@functools.cache
def build_asyncapi() -> dict[str, Any]:
    models = {contract.ConnectAuth, contract.ConnectAccepted, contract.ConnectRefused, contract.AckFailed}
    models.update(e.payload for e in CLIENT_EVENTS)
    models.update(e.ack for e in CLIENT_EVENTS)
    models.update(e.payload for e in SERVER_EVENTS)
    client_models = {e.payload for e in CLIENT_EVENTS} | {contract.ConnectAuth}
    _, schemas = models_json_schema(
        [(m, "validation" if m in client_models else "serialization")
         for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    messages: dict[str, Any] = {
        "connect": _message("connect", contract.ConnectAuth,
                            "The Socket.IO CONNECT packet (`40{...}`): its data is `auth`."),
        "connectAccepted": _message("connect", contract.ConnectAccepted, "CONNECT answered: the socket is live."),
        "connectError": _message("connect_error", contract.ConnectRefused,
                                 "CONNECT refused (`44{...}`); the connection is not established."),
        "ackFailed": _message("ack", contract.AckFailed,
                              "Any client event's acknowledgement when it failed: the REST status and title."),
    }
    operations: dict[str, Any] = {
        "connect": {
            "action": "send", "channel": _ref("#/channels/socket"),
            "title": "connect", "summary": "Authenticate the socket, optionally resuming after an offset.",
            "messages": [_ref("#/channels/socket/messages/connect")],
            "reply": {"channel": _ref("#/channels/socket"),
                      "messages": [_ref("#/channels/socket/messages/connectAccepted"),
                                   _ref("#/channels/socket/messages/connectError")]},
        },
    }
    for event in CLIENT_EVENTS:
        key, ack_key = _key(event.name, "send"), _key(event.name, "ack")
        messages[key] = _message(event.name, event.payload, event.summary)
        messages[ack_key] = _message("ack", event.ack, f"The acknowledgement of `{event.name}` when it succeeded.")
        operations[key] = {
            "action": "send", "channel": _ref("#/channels/socket"), "title": event.name, "summary": event.summary,
            "messages": [_ref(f"#/channels/socket/messages/{key}")],
            "reply": {"channel": _ref("#/channels/socket"),
                      "messages": [_ref(f"#/channels/socket/messages/{ack_key}"),
                                   _ref("#/channels/socket/messages/ackFailed")]},
        }
    for event in SERVER_EVENTS:
        key = _key(event.name, "on")
        messages[key] = _message(event.name, event.payload, event.summary)
        operations[key] = {
            "action": "receive", "channel": _ref("#/channels/socket"), "title": event.name,
            "summary": event.summary, "messages": [_ref(f"#/channels/socket/messages/{key}")],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Pulse real-time API",
            "version": "1.0.0",
            "description": (
                "Socket.IO v5 over Engine.IO v4 (WebSocket or HTTP long-polling), default namespace `/`, "
                "path `/socket.io`. Every message below is a Socket.IO EVENT whose single argument is the "
                "payload; client events are answered through the acknowledgement callback. Events that "
                "carry an `offset` are logged per user: reconnect with the last one seen (CONNECT `auth`) "
                "to get what was missed, in order. The REST API is described at /openapi.json."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "pulse": {"host": "localhost:8080", "protocol": "ws", "pathname": "/socket.io",
                      "description": "The instance (or load balancer) that served this document."},
        },
        "channels": {
            "socket": {
                "address": "/socket.io/?EIO=4&transport=websocket",
                "title": "The Socket.IO connection",
                "servers": [_ref("#/servers/pulse")],
                "messages": {key: _ref(f"#/components/messages/{key}") for key in messages},
            },
        },
        "operations": operations,
        "components": {"schemas": schemas.get("$defs", {}), "messages": messages},
    }
