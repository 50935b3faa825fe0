"""REST: conversations, message history, sending, read positions."""
from __future__ import annotations

from aiohttp import web

from api.http import Call, Router, WithStatus
from api.models.common import ListQuery
from api.models.messaging import ConversationCreateIn, MessageSendIn, MessagesQuery, ReadIn
from server.read_models.messaging import Conversation, ConversationList, Message, MessageList, ReadPosition

router = Router("messaging")


@router.route("POST", "/conversations", name="conversations.create", body=ConversationCreateIn,
              response=Conversation, status=201, also=(200,), errors=(400, 401, 413, 415))
async def create_conversation(request: web.Request, call: Call[ConversationCreateIn, None]):
    """Start a conversation (the existing one, with 200, for a direct pair)."""
    conversation, created = await call.services.messaging.create_conversation(
        call.user_id, call.body.member_ids, call.body.title or None)
    return conversation if created else WithStatus(conversation, 200)


@router.route("GET", "/conversations", name="conversations.list", query=ListQuery, response=ConversationList,
              errors=(400, 401))
async def list_conversations(request: web.Request, call: Call[None, ListQuery]):
    """The caller's conversations, most recent activity first."""
    return await call.services.messaging.list_conversations(call.user_id, limit=call.query.limit,
                                                            cursor=call.query.cursor)


@router.route("GET", "/conversations/{id}", name="conversations.get", response=Conversation,
              errors=(401, 404))
async def get_conversation(request: web.Request, call: Call):
    """One conversation (members only)."""
    return await call.services.messaging.get_conversation(call.user_id, request.match_info["id"])


@router.route("GET", "/conversations/{id}/messages", name="conversations.messages", query=MessagesQuery,
              response=MessageList, errors=(400, 401, 404))
async def list_messages(request: web.Request, call: Call[None, MessagesQuery]):
    """Message history, newest first; page back with ``before=<message id>``."""
    return await call.services.messaging.history(
        call.user_id, request.match_info["id"], limit=call.query.limit, before=call.query.before or call.query.cursor)


@router.route("POST", "/conversations/{id}/messages", name="conversations.send", body=MessageSendIn,
              response=Message, status=201, also=(200,), errors=(400, 401, 404, 413, 415))
async def send_message(request: web.Request, call: Call[MessageSendIn, None]):
    """Send a message; a retry with the same client_id returns the stored one with 200."""
    message, created = await call.services.messaging.send_message(
        call.user_id, request.match_info["id"], call.body.body, call.body.client_id)
    return message if created else WithStatus(message, 200)


@router.route("POST", "/conversations/{id}/read", name="conversations.read", body=ReadIn, response=ReadPosition,
              errors=(400, 401, 404, 415))
async def mark_read(request: web.Request, call: Call[ReadIn, None]):
    """Move the caller's read position forward to a message."""
    return await call.services.messaging.mark_read(call.user_id, request.match_info["id"], call.body.message_id)
