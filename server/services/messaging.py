"""The messaging context: conversations, messages and read positions in MongoDB.

Messages are stored first, then pushed to every member's sockets (the sender's too);
recipients with no connected socket get a ``message`` notification. REST and the
socket layer share these methods, so both behave the same; every live event of the
context (``message:new``, ``message:read``, ``typing``) is pushed from here.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, AsyncIterator
from uuid import UUID

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_preferences import ReadPreference, _ServerMode

from kernel.cursors import Cursors, decode_keyset, keyset_cursor, page
from kernel.errors import FieldError, NotFound, ValidationFailed
from kernel.ids import parse_object_id, parse_uuid
from kernel.timefmt import iso
from server.read_models.messaging import Conversation, ConversationList, Message, MessageList, ReadPosition
from server.services.notifications import NotificationsService
from server.services.ports import Presence, Pusher
from server.services.privacy.contributions import ErasureStep, ExportSection, Page, keyset_pages
from server.services.users import UsersService
from storage.mongo.conversations import RECENT_MESSAGES, ConversationsRepo
from storage.mongo.messages import MessagesRepo
from storage.mongo.values import mongo_now, order_key

log = logging.getLogger("pulse.messaging")

MAX_BODY_CHARS = 4000
MAX_CLIENT_ID_CHARS = 128
MAX_TITLE_CHARS = 200
MAX_MEMBERS = 256
# Set on a message document until its push has reached the members' offset logs.
PUSH_PENDING = "pushPending"


def message_dict(doc: dict[str, Any]) -> Message:
    return {
        "id": str(doc["_id"]),
        "conversation_id": doc["conversationId"],
        "sender_id": doc["senderId"],
        "body": doc["body"],
        "client_id": doc["clientId"],
        "created_at": iso(doc["createdAt"]),
    }


def direct_key(a: str, b: str) -> str:
    low, high = sorted((a, b))
    return f"{low}:{high}"


def _read_position(doc: dict[str, Any], user_id: str) -> dict[str, Any] | None:
    return (doc.get("reads") or {}).get(user_id)


def _unread_among_recent(doc: dict[str, Any], user_id: str) -> int | None:
    """How many of the conversation's recent messages (at most ``RECENT_MESSAGES``) others
    sent after the member's read position: no query. None when the conversation does not
    keep them from its start."""
    if not doc.get("recentFromStart"):
        return None
    position = _read_position(doc, user_id)
    read_key = (position.get("key") or order_key(position["at"], position["messageId"])) if position else ""
    return sum(1 for entry in doc.get("recent") or () if entry["senderId"] != user_id and entry["key"] > read_key)


class MessagingService:
    def __init__(
        self, mongo: AsyncDatabase, users: UsersService, notifications: NotificationsService,
        pusher: Pusher | None = None, presence: Presence | None = None,
        stale_reads: _ServerMode = ReadPreference.PRIMARY, *, cursors: Cursors,
        unread_count_max: int = RECENT_MESSAGES,
    ) -> None:
        self.conversations_repo = ConversationsRepo(mongo, recent_max=unread_count_max)
        self.cursors = cursors
        self.messages_repo = MessagesRepo(mongo, stale_reads)
        self.users = users
        self.notifications = notifications
        # Set by the real-time layer. Without a pusher nothing is pushed; without
        # presence every recipient counts as offline (and gets a notification).
        self.pusher = pusher
        self.presence = presence

    # --- conversations ------------------------------------------------------------------

    async def create_conversation(
        self, user_id: str, member_ids: list[str], title: str | None = None,
    ) -> tuple[Conversation, bool]:
        """(conversation, created). One other member: the pair's direct conversation,
        the existing one when there is one (created False). Two or more: a new group."""
        others: list[str] = []
        for raw in member_ids:
            uid = parse_uuid(raw) if isinstance(raw, str) else None
            if uid is None:
                raise ValidationFailed("The request body is not valid.",
                                       [FieldError("member_ids", f"{raw!r} is not a user id")])
            if str(uid) != user_id and str(uid) not in others:
                others.append(str(uid))
        if not others:
            raise ValidationFailed("A conversation needs at least one other member.",
                                   [FieldError("member_ids", "name at least one other user")])
        if len(others) >= MAX_MEMBERS:
            raise ValidationFailed("Too many members.",
                                   [FieldError("member_ids", f"at most {MAX_MEMBERS - 1} others")])
        found = await self.users.get_public_many(others)
        missing = [u for u in others if u not in found]
        if missing:
            raise ValidationFailed("Members must be existing users.",
                                   [FieldError("member_ids", f"no such user: {u}") for u in missing])
        now = mongo_now()
        doc: dict[str, Any] = {
            "_id": ObjectId(), "kind": "direct" if len(others) == 1 else "group", "title": title,
            "memberIds": [user_id, *others], "createdAt": now, "lastActivityAt": now, "lastMessage": None,
            "reads": {}, "recent": [], "recentFromStart": True,
        }
        if len(others) == 1:
            doc["directKey"] = direct_key(user_id, others[0])
            existing = await self.conversations_repo.get_direct(doc["directKey"])
            if existing is not None:
                return await self._conversation_for(existing, user_id), False
            if not await self.conversations_repo.insert(doc):
                # Lost a race with the other member creating the same pair.
                existing = await self.conversations_repo.get_direct(doc["directKey"])
                return await self._conversation_for(existing, user_id), False
        else:
            await self.conversations_repo.insert(doc)
        return await self._conversation_for(doc, user_id), True

    async def _conversation_for(self, doc: dict[str, Any], user_id: str) -> Conversation:
        """The API shape of a conversation, as ``user_id`` sees it (their unread count)."""
        unread = _unread_among_recent(doc, user_id)
        if unread is None:  # stored before conversations kept their recent messages
            position = _read_position(doc, user_id)
            unread = await self.messages_repo.count_unread(
                str(doc["_id"]), user_id, (position["at"], position["messageId"]) if position else None,
                limit=self.conversations_repo.recent_max)
        return {
            "id": str(doc["_id"]),
            "kind": doc["kind"],
            "title": doc.get("title"),
            "member_ids": list(doc["memberIds"]),
            "created_at": iso(doc["createdAt"]),
            "last_message": message_dict(doc["lastMessage"]) if doc.get("lastMessage") else None,
            "unread_count": unread,
        }

    async def _member_conversation(self, user_id: str, conversation_id: str) -> dict[str, Any]:
        oid = parse_object_id(conversation_id)
        doc = await self.conversations_repo.get_for_member(oid, user_id) if oid is not None else None
        if doc is None:
            # Same answer whether it does not exist or the caller is not a member.
            raise NotFound("No such conversation.")
        return doc

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation:
        return await self._conversation_for(await self._member_conversation(user_id, conversation_id), user_id)

    async def list_conversations(self, user_id: str, *, limit: int, cursor: str | None) -> ConversationList:
        docs = await self.conversations_repo.list_for_member(user_id, limit + 1, decode_keyset(self.cursors, cursor))
        result = page(docs, limit, keyset_cursor(self.cursors, "lastActivityAt"))
        result["items"] = list(await asyncio.gather(*(self._conversation_for(d, user_id) for d in result["items"])))
        return result

    async def co_members_among(self, user_id: str, user_ids: list[str]) -> set[str]:
        """Those of ``user_ids`` who share a conversation with ``user_id`` (one query)."""
        if not user_ids:
            return set()
        return await self.conversations_repo.co_members_among(user_id, user_ids)

    async def member_ids(self, conversation_id: str, user_id: str) -> list[str]:
        """Every member of the conversation; NotFound unless ``user_id`` is one of them."""
        return list((await self._member_conversation(user_id, conversation_id))["memberIds"])

    # --- messages -----------------------------------------------------------------------

    async def history(
        self, user_id: str, conversation_id: str, *, limit: int, before: str | None,
    ) -> MessageList:
        """Newest first. ``before`` is a message id of this conversation (the previous
        page's ``next_cursor``)."""
        conversation_id = str((await self._member_conversation(user_id, conversation_id))["_id"])
        start = None
        if before is not None:
            oid = parse_object_id(before)
            anchor = await self.messages_repo.get_in_conversation(conversation_id, oid) if oid is not None else None
            if anchor is None:
                raise ValidationFailed("The request query is not valid.",
                                       [FieldError("before", "not a message of this conversation")])
            start = (anchor["createdAt"], anchor["_id"])
        docs = await self.messages_repo.history(conversation_id, limit + 1, start)
        # The next page starts before this page's oldest message: its id is the cursor.
        return page(docs, limit, lambda doc: str(doc["_id"]), message_dict)

    async def send_message(
        self, user_id: str, conversation_id: str, body: str, client_id: str | None,
    ) -> tuple[Message, bool]:
        """Store and fan out a message: (message, created). A retry with the same
        ``client_id`` returns the stored message with created False; it pushes the
        message only if no push of it has succeeded yet (and notifies no one again)."""
        errors = []
        if not isinstance(body, str) or not body.strip() or len(body) > MAX_BODY_CHARS:
            errors.append(FieldError("body", f"1 to {MAX_BODY_CHARS} characters, not only spaces"))
        if client_id is not None and (not isinstance(client_id, str) or not 1 <= len(client_id) <= MAX_CLIENT_ID_CHARS):
            errors.append(FieldError("client_id", f"1 to {MAX_CLIENT_ID_CHARS} characters"))
        if errors:
            raise ValidationFailed("The message is not valid.", errors)
        conversation = await self._member_conversation(user_id, conversation_id)
        # No look-up of client_id first: the unique (conversationId, senderId, clientId) index tells a retry
        # apart on insert, which saves a round trip on every first attempt.
        doc = {
            "_id": ObjectId(), "conversationId": str(conversation["_id"]), "senderId": user_id, "body": body,
            "clientId": client_id or uuid.uuid4().hex, "createdAt": mongo_now(),
            # Until a push reached the members' offset logs (see _push_message).
            PUSH_PENDING: True,
        }
        if not await self.messages_repo.insert(doc):
            # A retry, or a concurrent one stored it first.
            existing = await self.messages_repo.get_by_client_id(doc["conversationId"], user_id, doc["clientId"])
            if existing is None:  # pragma: no cover - the index said it exists
                raise NotFound("No such message.")
            return await self._retried(existing, conversation)
        message = message_dict(doc)
        member_ids = list(conversation["memberIds"])
        # Stored is what counts: members get it, and those offline a notification, while the
        # conversation's last message and the sender's read position are updated (a failure
        # there is repaired by a retry, which runs _after_store again, and pushes again only
        # if this push failed).
        await asyncio.gather(
            self._after_store(doc, conversation),
            self._push_message(doc, member_ids),
            self._notify_offline(message, member_ids),
        )
        return message, True

    async def _retried(self, existing: dict[str, Any], conversation: dict[str, Any]) -> tuple[Message, bool]:
        # Found in this conversation (the client id is scoped to it). The first attempt may
        # have died between storing and updating the conversation, or its push failed
        # (Redis away): both are done again.
        await self._after_store(existing, conversation)
        if existing.get(PUSH_PENDING):
            await self._push_message(existing, list(conversation["memberIds"]))
        return message_dict(existing), False

    async def _push_message(self, doc: dict[str, Any], member_ids: list[str]) -> None:
        """``message:new`` to the members, once per message whoever calls it (keyed on
        the message id, so a first attempt and a retry racing append one entry), then
        the message is marked pushed. A failure leaves it pending for the next retry."""
        if self.pusher is None or not member_ids:
            return
        try:
            await self.pusher.push(member_ids, "message:new", {"message": message_dict(doc)},
                                   once_key=f"message:{doc['_id']}")
        except Exception:  # noqa: BLE001 - stored is what matters; a retry pushes it
            log.exception("pushing message %s failed; a retry of the send pushes it", doc["_id"])
            return
        try:
            await self.messages_repo.mark_pushed(doc["conversationId"], doc["_id"])
        except Exception:  # noqa: BLE001 - a retry pushes again, and appends nothing
            log.exception("could not mark message %s pushed", doc["_id"])

    async def _after_store(self, doc: dict[str, Any], conversation: dict[str, Any]) -> None:
        # The conversation's last message and the sender's read position (sending means the
        # sender has seen the conversation up to here): one write when the message is the
        # newest for both, which it nearly always is; each on its own condition otherwise.
        if await self.conversations_repo.record_sent_message(conversation["_id"], doc):
            return
        await self.conversations_repo.record_message(conversation["_id"], doc)
        await self.conversations_repo.advance_read(conversation["_id"], doc["senderId"], doc["_id"], doc["createdAt"])

    async def _notify_offline(self, message: Message, member_ids: list[str]) -> None:
        recipients = [m for m in member_ids if m != message["sender_id"]]
        if not recipients:
            return
        online: set[str] = set()
        if self.presence is not None:
            try:
                online = set(await self.presence.online(recipients))
            except Exception:  # noqa: BLE001 - unknown presence: notify rather than lose it
                log.exception("presence lookup failed; notifying every recipient")
        offline = [r for r in recipients if r not in online]
        if offline:
            try:
                await self.notifications.notify_message(offline, message)
            except Exception:  # noqa: BLE001 - the message is stored; a missed notice is not a failed send
                log.exception("message notifications for %s failed", message["id"])

    async def typing(self, user_id: str, conversation_id: str, typing: bool) -> None:
        """Tells the other members that ``user_id`` is typing (or stopped): live only, never
        replayed. NotFound unless the user is a member. Nothing is stored, so a failed push
        is the caller's answer (503), not logged and dropped as after a write."""
        others = [m for m in await self.member_ids(conversation_id, user_id) if m != user_id]
        if self.pusher is None or not others:
            return
        await self.pusher.push(others, "typing",
                               {"conversation_id": conversation_id, "user_id": user_id, "typing": typing},
                               replay=False)

    async def _push(self, user_ids: list[str], event: str, data: dict[str, Any]) -> None:
        if self.pusher is None or not user_ids:
            return
        try:
            await self.pusher.push(user_ids, event, data)
        except Exception:  # noqa: BLE001 - stored is what matters; clients catch up over REST
            log.exception("pushing %s failed", event)

    # --- read positions -----------------------------------------------------------------

    async def mark_read(self, user_id: str, conversation_id: str, message_id: str) -> ReadPosition:
        """Move the caller's read position up to ``message_id`` (never backwards):
        ``{conversation_id, last_read_message_id}`` with the position now held."""
        conversation = await self._member_conversation(user_id, conversation_id)
        conversation_id = str(conversation["_id"])
        oid = parse_object_id(message_id)
        message = await self.messages_repo.get_in_conversation(conversation_id, oid) if oid is not None else None
        if message is None:
            raise ValidationFailed("The request body is not valid.",
                                   [FieldError("message_id", "not a message of this conversation")])
        moved = await self.conversations_repo.advance_read(conversation["_id"], user_id, message["_id"],
                                                      message["createdAt"])
        if moved:
            others = [m for m in conversation["memberIds"] if m != user_id]
            await self._push(others, "message:read", {
                "conversation_id": conversation_id, "user_id": user_id, "message_id": str(message["_id"])})
            return {"conversation_id": conversation_id, "last_read_message_id": str(message["_id"])}
        current = await self.conversations_repo.get_for_member(conversation["_id"], user_id)
        position = _read_position(current or conversation, user_id)
        last = str(position["messageId"]) if position else str(message["_id"])
        return {"conversation_id": conversation_id, "last_read_message_id": last}

    # --- erasure and export (for the privacy context) ----------------------------------

    async def users_told_about(self, user_id: str) -> list[str]:
        """Whose replay logs can hold events about the user: the members of their
        conversations got their messages and read receipts (the user among them)."""
        members: list[str] = []
        after = None
        while True:
            docs = await self.conversations_repo.page_for_member(user_id, after, 500)
            for doc in docs:
                members += doc["memberIds"]
            if len(docs) < 500:
                return members
            after = docs[-1]["_id"]

    def erasure_steps(self) -> list[ErasureStep]:
        async def own_messages(uid: UUID) -> None:
            # Their messages go; the others' stay. Conversations showing one of theirs as the
            # last message show the newest remaining one instead.
            user_id = str(uid)
            await self.messages_repo.delete_by_sender(user_id)
            for conversation_id in await self.conversations_repo.ids_with_last_message_from(user_id):
                latest = await self.messages_repo.latest_in_conversation(str(conversation_id))
                await self.conversations_repo.replace_last_message(conversation_id, user_id, latest)

        async def membership(uid: UUID) -> None:
            for doc in await self.conversations_repo.remove_member(str(uid)):
                if not doc.get("memberIds"):  # nobody left to read it
                    await self.messages_repo.delete_in_conversation(str(doc["_id"]))
                    await self.conversations_repo.delete(doc["_id"])

        return [ErasureStep("messaging.messages", own_messages), ErasureStep("messaging.membership", membership)]

    def export_sections(self) -> list[ExportSection]:
        def conversation_pages(uid: UUID) -> AsyncIterator[Page]:
            # The user's view: members and title, not the others' read positions.
            return keyset_pages(lambda after, limit: self.conversations_repo.page_for_member(str(uid), after, limit),
                                None, lambda doc: doc["_id"], lambda doc: {
                                    "id": str(doc["_id"]), "kind": doc["kind"], "title": doc.get("title"),
                                    "member_ids": list(doc["memberIds"]), "created_at": iso(doc["createdAt"])})

        def message_pages(uid: UUID) -> AsyncIterator[Page]:
            # Only the messages they sent: the others' are the others' data.
            return keyset_pages(lambda after, limit: self.messages_repo.page_by_sender(str(uid), after, limit), None,
                                lambda doc: doc["_id"], message_dict)

        return [ExportSection("conversations", conversation_pages), ExportSection("messages", message_pages)]
