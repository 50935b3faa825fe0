"""The messaging context: conversations, messages and read positions in MongoDB.

Messages are stored first, then pushed to every member's sockets (the sender's too);
recipients with no connected socket get a ``message`` notification. REST and the
socket layer share these methods, so both behave the same; every live event of the
context (``message:new``, ``message:read``, ``typing``) is pushed from here. Sends are
written in groups (``message_writes``: what arrives while a write is in flight goes in the
next one) and find the conversation's members in this process's ``MembershipCache``.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import Any, AsyncIterator, Awaitable
from uuid import UUID

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_preferences import ReadPreference, _ServerMode

from kernel.cursors import Cursors, decode_keyset, keyset_cursor, page
from kernel.errors import FieldError, NotFound, StoreUnavailable, ValidationFailed
from kernel.group_commit import GroupCommit
from kernel.ids import parse_object_id, parse_uuid
from kernel.timefmt import iso
from server.read_models.messaging import Conversation, ConversationList, Message, MessageList, ReadPosition
from server.services.membership_cache import Members, MembershipCache
from server.services.message_writes import MAX_BATCH, MessageWriter, NewMessage
from server.services.notifications import NotificationsService
from server.services.ports import CONVERSATIONS_CHANGED, Presence, Pusher
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
# Set on a message document whose push failed (documents stored before group commit
# carry it from their insert until their push).
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
        unread_count_max: int = RECENT_MESSAGES, membership: MembershipCache | None = None,
        push_retry_seconds: float = 24 * 3600,
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
        self.writer = MessageWriter(self.messages_repo, self.conversations_repo, pusher)
        self._offline_notices: GroupCommit[tuple[Message, list[str]], None] = GroupCommit(
            self._notify_offline_batch, max_items=MAX_BATCH, name="message-notices")
        # Without one (no fan-out channel to hear changes on), every send reads the members.
        self.membership = membership
        self._member_loads: dict[str, asyncio.Task[Members | None]] = {}
        self._send_turns = _Turns()
        # A retry within this long of its message pushes it again, keyed on the message
        # id (the pusher's once key lives as long as the offset logs keep events): a send
        # whose first attempt stopped between its insert and its push gets pushed.
        self.push_retry_seconds = push_retry_seconds

    async def close(self) -> None:
        """Lets the writes in flight finish (the app's shutdown, after the sockets closed)."""
        await self.writer.drain()
        await self._offline_notices.drain()

    # --- conversation membership (cached) --------------------------------------------------

    async def _members(self, conversation_id: str, user_id: str) -> Members:
        """The conversation's members, from the cache when it has them; NotFound unless
        ``user_id`` is one (the same answer as for a conversation that does not exist)."""
        oid = parse_object_id(conversation_id)
        members = None
        if oid is not None:
            key = str(oid)
            members = self.membership.get(key) if self.membership is not None else None
            if members is None:
                members = await self._load_members(key, oid)
        if members is None or user_id not in members.member_ids:
            raise NotFound("No such conversation.")
        return members

    async def _load_members(self, key: str, oid: ObjectId) -> Members | None:
        # One read per conversation however many sends wait for it (they resume in order).
        load = self._member_loads.get(key)
        if load is None:
            load = asyncio.ensure_future(self._read_members(key, oid))
            load.add_done_callback(_retrieved)
            self._member_loads[key] = load
            load.add_done_callback(lambda _: self._member_loads.pop(key, None))
        return await asyncio.shield(load)

    async def _read_members(self, key: str, oid: ObjectId) -> Members | None:
        ticket = self.membership.ticket() if self.membership is not None else None
        member_ids = await self.conversations_repo.get_member_ids(oid)
        if member_ids is None:
            return None
        members = Members(oid, tuple(member_ids))
        if self.membership is not None and ticket is not None:
            self.membership.put(key, members, ticket)
        return members

    def forget_conversations(self, conversation_ids: list[str]) -> None:
        """Their members changed (announced on the fan-out channel, or here)."""
        if self.membership is not None:
            self.membership.forget(conversation_ids)

    def forget_all_conversations(self) -> None:
        if self.membership is not None:
            self.membership.clear()

    async def conversations_changed(self, conversation_ids: list[str], user_ids: list[str]) -> None:
        """After members left or joined ``conversation_ids`` or they were deleted: every
        instance forgets them (this one at once, the others through the fan-out channel;
        ``user_ids``: those whose conversations they are, the recipients the channel
        names). Raises if the announcement could not be published."""
        self.forget_conversations(conversation_ids)
        if self.pusher is not None and conversation_ids and user_ids:
            await self.pusher.push(user_ids, CONVERSATIONS_CHANGED, {"conversation_ids": conversation_ids},
                                   replay=False)

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
        return list((await self._members(conversation_id, user_id)).member_ids)

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
        message only if no push of it has succeeded yet (and notifies no one again).
        Sends of one conversation are stored and pushed in the order of the calls."""
        errors = []
        if not isinstance(body, str) or not body.strip() or len(body) > MAX_BODY_CHARS:
            errors.append(FieldError("body", f"1 to {MAX_BODY_CHARS} characters, not only spaces"))
        if client_id is not None and (not isinstance(client_id, str) or not 1 <= len(client_id) <= MAX_CLIENT_ID_CHARS):
            errors.append(FieldError("client_id", f"1 to {MAX_CLIENT_ID_CHARS} characters"))
        if errors:
            raise ValidationFailed("The message is not valid.", errors)
        # The message gets its place (id and time) and joins a write in the order of the
        # calls, also when an earlier one waits for the members to be read.
        turn = self._send_turns.take(conversation_id)
        try:
            members = await self._members(conversation_id, user_id)
            await turn.reached()
            doc = {
                "_id": ObjectId(), "conversationId": str(members.conversation_id), "senderId": user_id,
                "body": body, "clientId": client_id or uuid.uuid4().hex, "createdAt": mongo_now(),
            }
            # No look-up of client_id first: the unique (conversationId, senderId, clientId)
            # index tells a retry apart on insert.
            stored_future = self.writer.store(NewMessage(doc, members.conversation_id, members.member_ids,
                                                         {"message": message_dict(doc)}))
        finally:
            turn.done()
        stored = await stored_future
        if stored.recorded is None:  # a retry, or a concurrent one stored it first
            return await self._retried(stored.doc, members)
        message = message_dict(stored.doc)
        # Stored is what counts: members get it, and those offline a notification, while the
        # conversation's last message and the sender's read position are updated (a failure
        # there is repaired by a retry, which records it again, and pushes again only if
        # this push failed).
        waits: list[Awaitable[Any]] = [stored.recorded]
        if stored.pushed is not None:
            waits.append(stored.pushed)
        if stored.created:
            waits.append(self._notify_offline(message, list(members.member_ids)))
        await asyncio.gather(*waits)
        return message, stored.created

    async def _retried(self, existing: dict[str, Any], members: Members) -> tuple[Message, bool]:
        # Found in this conversation (the client id is scoped to it). The first attempt may
        # have died between storing and updating the conversation, or its push failed
        # (Redis away) or may not have happened: both are done again (the push keyed on
        # the message id, so once).
        await self._after_store(existing, members.conversation_id)
        if existing.get(PUSH_PENDING) or existing["createdAt"] > mongo_now() - timedelta(
                seconds=self.push_retry_seconds):
            await self._push_message(existing, list(members.member_ids))
        return message_dict(existing), False

    async def _push_message(self, doc: dict[str, Any], member_ids: list[str]) -> None:
        """``message:new`` to the members, once per message whoever calls it (keyed on
        the message id, so a first attempt and a retry racing append one entry); a
        message marked as not pushed is unmarked. A failure leaves it for the next retry."""
        if self.pusher is None or not member_ids:
            return
        try:
            await self.pusher.push(member_ids, "message:new", {"message": message_dict(doc)},
                                   once_key=f"message:{doc['_id']}")
        except Exception:  # noqa: BLE001 - stored is what matters; a retry pushes it
            log.exception("pushing message %s failed; a retry of the send pushes it", doc["_id"])
            if not doc.get(PUSH_PENDING):
                try:
                    await self.messages_repo.mark_push_pending([doc["_id"]])
                except Exception:  # noqa: BLE001 - a retry within the push window pushes it anyway
                    log.exception("could not mark message %s as not pushed", doc["_id"])
            return
        if not doc.get(PUSH_PENDING):
            return
        try:
            await self.messages_repo.mark_pushed(doc["conversationId"], doc["_id"])
        except Exception:  # noqa: BLE001 - a retry pushes again, and appends nothing
            log.exception("could not mark message %s pushed", doc["_id"])

    async def _after_store(self, doc: dict[str, Any], conversation_id: ObjectId) -> None:
        # A retried message's conversation (last message, the sender's read position,
        # recent messages), each part only where it is not recorded yet.
        if await self.conversations_repo.record_sent_message(conversation_id, doc):
            return
        await self.conversations_repo.record_message(conversation_id, doc)
        await self.conversations_repo.advance_read(conversation_id, doc["senderId"], doc["_id"], doc["createdAt"])

    def _notify_offline(self, message: Message, member_ids: list[str]) -> asyncio.Future[None]:
        """Members with no connected socket get a notification; sends written together are
        looked up together (one presence query, one notifications write)."""
        return self._offline_notices.submit((message, member_ids))

    async def _notify_offline_batch(self, batch: list[tuple[Message, list[str]]]) -> list[None]:
        wanted = [(message, [r for r in members if r != message["sender_id"]]) for message, members in batch]
        everyone = list(dict.fromkeys(r for _, rs in wanted for r in rs))
        online: set[str] = set()
        if self.presence is not None and everyone:
            try:
                online = set(await self.presence.online(everyone))
            except Exception:  # noqa: BLE001 - unknown presence: notify rather than lose it
                log.exception("presence lookup failed; notifying every recipient")
        offline = [([r for r in rs if r not in online], message) for message, rs in wanted]
        offline = [(rs, message) for rs, message in offline if rs]
        if offline:
            try:
                await self.notifications.notify_messages(offline)
            except Exception:  # noqa: BLE001 - the messages are stored; a missed notice is not a failed send
                log.exception("message notifications for %s failed", ", ".join(m["id"] for _, m in offline))
        return [None] * len(batch)

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
            docs = await self.conversations_repo.remove_member(str(uid))
            for doc in docs:
                if not doc.get("memberIds"):  # nobody left to read it
                    await self.messages_repo.delete_in_conversation(str(doc["_id"]))
                    await self.conversations_repo.delete(doc["_id"])
            # Every instance's membership cache forgets them. Not announced (Redis away):
            # the instances whose subscription broke too stop trusting their caches, the
            # others' entries expire within membership_cache_seconds.
            told = list(dict.fromkeys([str(uid), *(m for d in docs for m in d["memberIds"])]))
            try:
                await self.conversations_changed([str(d["_id"]) for d in docs], told)
            except StoreUnavailable:
                log.warning("membership change of %d conversations not announced; caches expire it", len(docs))

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


class _Turns:
    """Per key (a conversation id), callers go on in the order they took their turn."""

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Future[None]] = {}

    def take(self, key: str) -> "_Turn":
        mine = asyncio.get_running_loop().create_future()
        previous = self._last.get(key)
        self._last[key] = mine
        return _Turn(self, key, previous, mine)

    def _release(self, key: str, mine: asyncio.Future[None]) -> None:
        if not mine.done():
            mine.set_result(None)
        if self._last.get(key) is mine:
            del self._last[key]


class _Turn:
    def __init__(self, turns: _Turns, key: str, previous: asyncio.Future[None] | None,
                 mine: asyncio.Future[None]) -> None:
        self.turns, self.key, self.previous, self.mine = turns, key, previous, mine

    async def reached(self) -> None:
        """Returns once every earlier turn of the key is done (at once if they are)."""
        if self.previous is not None and not self.previous.done():
            await asyncio.wait([self.previous])  # not cancelled with this caller

    def done(self) -> None:
        self.turns._release(self.key, self.mine)


def _retrieved(task: asyncio.Task[Any]) -> None:
    # A shared read that failed while nobody waited any more: its error is not lost noise.
    if not task.cancelled():
        task.exception()
