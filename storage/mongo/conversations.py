"""Conversations: members, kind, title, last message and each member's read position.

Document: ``{_id: ObjectId, kind, title, memberIds: [user id], directKey?: "a:b",
createdAt, lastActivityAt, lastMessage: message document | null, lastMessageKey,
reads: {<user id>: {messageId: ObjectId, at: datetime, key}},
recent: [{key, senderId}] (the newest messages, oldest first), recentFromStart: true}``.

``recent`` is what unread counts are computed from, with no query over the messages: a
member's unread count is how many of those entries from others come after their read
position. It holds the newest ``recent_max`` messages (``$push`` with ``$sort`` and
``$slice``), so a list of conversations costs the same however long they are, and a
count never exceeds ``recent_max``. Every message is added exactly once: with the
"newer than the last" update when it is the newest (nearly always), otherwise by an
update whose condition is that its key is not there yet. ``recentFromStart`` marks the
conversations that had ``recent`` from their creation on: in one stored before, the
entries start with the first message sent since (``unread_counts`` counts those the old way).

Not sharded (``SHARD_KEY`` None): one small document per conversation, and no shard key
would serve it — a user's conversations are found by ``memberIds``, an array (which
MongoDB cannot shard on), and the one-direct-conversation-per-pair rule needs a unique
index on ``directKey``, which a key on ``_id`` would not allow. It stays whole on the
database's primary shard; past that, a ``memberships`` collection sharded by user id
would carry the per-member reads.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from storage.mongo.errors import mongo_boundary
from storage.mongo.values import insert_unique, keyset_page, order_key

# Unread counts look at most this many of a conversation's newest messages.
RECENT_MESSAGES = 100


SHARD_KEY: dict[str, int] | None = None


@mongo_boundary
class ConversationsRepo:
    def __init__(self, db: AsyncDatabase, *, recent_max: int = RECENT_MESSAGES) -> None:
        self.collection = db["conversations"]
        self.recent_max = recent_max

    async def insert(self, doc: dict[str, Any]) -> bool:
        """False when a direct conversation for the same pair exists already."""
        return await insert_unique(self.collection, doc)

    async def get_for_member(self, conversation_id: ObjectId, user_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": conversation_id, "memberIds": user_id})

    async def get_member_ids(self, conversation_id: ObjectId) -> list[str] | None:
        """The members (None: no such conversation)."""
        doc = await self.collection.find_one({"_id": conversation_id}, {"memberIds": 1})
        return list(doc["memberIds"]) if doc is not None else None

    async def get_direct(self, direct_key: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"directKey": direct_key})

    async def co_members_among(self, user_id: str, user_ids: list[str]) -> set[str]:
        """Those of ``user_ids`` who share at least one conversation with ``user_id``."""
        members = await self.collection.distinct(
            "memberIds", {"$and": [{"memberIds": user_id}, {"memberIds": {"$in": user_ids}}]})
        wanted = set(user_ids)
        return {m for m in members if m in wanted}

    async def list_for_member(
        self, user_id: str, limit: int, after: tuple[datetime, ObjectId] | None,
    ) -> list[dict[str, Any]]:
        """Most recent activity first; ``after`` is the (lastActivityAt, _id) of the previous page's last."""
        return await keyset_page(self.collection, {"memberIds": user_id}, "lastActivityAt", after, limit,
                                 newest_first=True)

    async def record_message(self, conversation_id: ObjectId, message: dict[str, Any]) -> None:
        """Make ``message`` the last one, unless a later one is there already (sends race);
        either way it is among the recent messages afterwards."""
        when, changes = _last_message_change(message, self.recent_max)
        if (await self.collection.update_one({"_id": conversation_id, **when}, changes)).matched_count:
            return
        # Older than the last (a concurrent send overtook it), or recorded already (a retry).
        key = changes["$set"]["lastMessageKey"]
        await self.collection.update_one({"_id": conversation_id, "recent.key": {"$ne": key}},
                                         {"$push": changes["$push"]})

    async def record_sent_message(self, conversation_id: ObjectId, message: dict[str, Any]) -> bool:
        """``record_message`` and the sender's ``advance_read`` in one write, for the usual
        case where this message is newer than both; False (nothing written) otherwise. One
        write per send: concurrent writes to one hot document conflict and retry."""
        last_when, last_changes = _last_message_change(message, self.recent_max)
        read_when, read_set = _read_position_change(message["senderId"], message["_id"], message["createdAt"])
        result = await self.collection.update_one(
            {"_id": conversation_id, **last_when, **read_when},
            {**last_changes, "$set": {**last_changes["$set"], **read_set}},
        )
        return result.matched_count > 0

    async def record_new_messages(self, messages: dict[ObjectId, list[dict[str, Any]]]) -> None:
        """What ``record_sent_message`` does, for many just-stored messages (conversation id
        → its messages) in one round trip: one update per conversation, however many of its
        messages and senders there are, that applies whatever else was recorded meanwhile
        (by another instance, say): the last message is the newest of its own and the new
        ones, each sender's read position moves forward only, the recent messages are merged
        in key order. Its one condition is that none of the messages is among the recent
        ones yet; when a retried send recorded one of them meanwhile, a second round trip
        adds them one by one, each only if it is not there."""
        if not messages:
            return
        batch = [(conversation_id, sorted(docs, key=_key)) for conversation_id, docs in messages.items() if docs]
        merged = [UpdateOne({"_id": cid, "recent.key": {"$nin": [_key(m) for m in docs]}},
                            _recorded(docs, self.recent_max, with_recent=True)) for cid, docs in batch]
        if (await self.collection.bulk_write(merged, ordered=False)).matched_count == len(merged):
            return
        one_by_one = []
        for cid, docs in batch:
            one_by_one.append(UpdateOne({"_id": cid}, _recorded(docs, self.recent_max, with_recent=False)))
            for message in docs:
                key = _key(message)
                one_by_one.append(UpdateOne({"_id": cid, "recent.key": {"$ne": key}}, {"$push": {"recent": {
                    "$each": [{"key": key, "senderId": message["senderId"]}], "$sort": {"key": 1},
                    "$slice": -self.recent_max}}}))
        await self.collection.bulk_write(one_by_one, ordered=False)

    async def advance_read(self, conversation_id: ObjectId, user_id: str, message_id: ObjectId, at: datetime) -> bool:
        """Move the member's read position to the message, never backwards. True if it moved."""
        when, changes = _read_position_change(user_id, message_id, at)
        result = await self.collection.update_one({"_id": conversation_id, **when}, {"$set": changes})
        return result.modified_count > 0

    # --- privacy (export, erasure) ------------------------------------------------------

    async def page_for_member(self, user_id: str, after: ObjectId | None, limit: int) -> list[dict[str, Any]]:
        """A page of a member's conversations, oldest first (keyset on _id)."""
        query: dict[str, Any] = {"memberIds": user_id}
        if after is not None:
            query["_id"] = {"$gt": after}
        return await self.collection.find(query).sort("_id", 1).limit(limit).to_list(None)

    async def ids_with_last_message_from(self, sender_id: str) -> list[ObjectId]:
        docs = await self.collection.find({"lastMessage.senderId": sender_id}, {"_id": 1}).to_list(None)
        return [d["_id"] for d in docs]

    async def replace_last_message(self, conversation_id: ObjectId, sender_id: str,
                                   message: dict[str, Any] | None) -> None:
        """After the sender's messages were erased: the newest remaining one (or none)."""
        key = order_key(message["createdAt"], message["_id"]) if message else None
        await self.collection.update_one({"_id": conversation_id, "lastMessage.senderId": sender_id},
                                         {"$set": {"lastMessage": message, "lastMessageKey": key}})

    async def remove_member(self, user_id: str) -> list[dict[str, Any]]:
        """Takes the user out of every conversation (membership, read position, the
        direct pair key that names them); returns the conversations as they are now."""
        ids = [d["_id"] for d in await self.collection.find({"memberIds": user_id}, {"_id": 1}).to_list(None)]
        if ids:
            await self.collection.update_many(
                {"_id": {"$in": ids}},
                # Their messages are erased too: they no longer count as unread for anyone.
                {"$pull": {"memberIds": user_id, "recent": {"senderId": user_id}},
                 "$unset": {f"reads.{user_id}": "", "directKey": ""}},
            )
        return await self.collection.find({"_id": {"$in": ids}}).to_list(None) if ids else []

    async def delete(self, conversation_id: ObjectId) -> None:
        await self.collection.delete_one({"_id": conversation_id})


def _last_message_change(message: dict[str, Any], recent_max: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(condition, update) making ``message`` the conversation's last one if it is newer,
    and adding it to the recent ones (a message newer than the last is not there yet)."""
    key = order_key(message["createdAt"], message["_id"])
    return ({"lastMessageKey": {"$not": {"$gte": key}}},
            {"$set": {"lastMessage": message, "lastMessageKey": key},
             "$push": {"recent": {"$each": [{"key": key, "senderId": message["senderId"]}],
                                  "$sort": {"key": 1}, "$slice": -recent_max}},
             # Never moves back, even past a conversation stored before lastMessageKey existed.
             "$max": {"lastActivityAt": message["createdAt"]}})


def _key(message: dict[str, Any]) -> str:
    return order_key(message["createdAt"], message["_id"])


def _recorded(messages: list[dict[str, Any]], recent_max: int, *, with_recent: bool) -> list[dict[str, Any]]:
    """An update pipeline recording ``messages`` (oldest first) whatever the conversation
    holds: the newest is the last message if it is newer than the one there, each sender's
    newest their read position if it is further than theirs (and they are a member), and
    (``with_recent``) all of them are merged into the recent ones in key order, the newest
    ``recent_max`` kept. Values go in as ``$literal``: a body may start with "$"."""
    newest = messages[-1]
    newest_key = _key(newest)
    newer = {"$lt": [{"$ifNull": ["$lastMessageKey", ""]}, newest_key]}
    fields: dict[str, Any] = {
        "lastMessage": {"$cond": [newer, {"$literal": newest}, "$lastMessage"]},
        "lastMessageKey": {"$cond": [newer, newest_key, "$lastMessageKey"]},
        # Never moves back, even past a conversation stored before lastMessageKey existed.
        "lastActivityAt": {"$max": ["$lastActivityAt", newest["createdAt"]]},
    }
    if with_recent:
        entries = [{"key": _key(m), "senderId": m["senderId"]} for m in messages]
        fields["recent"] = {"$slice": [{"$sortArray": {
            "input": {"$concatArrays": [{"$ifNull": ["$recent", []]}, {"$literal": entries}]},
            "sortBy": {"key": 1}}}, -recent_max]}
    for sender_id, message in {m["senderId"]: m for m in messages}.items():  # each sender's newest
        key, field = _key(message), f"reads.{sender_id}"
        further = {"$and": [
            {"$in": [sender_id, {"$ifNull": ["$memberIds", []]}]},
            {"$lt": [{"$ifNull": [f"${field}.key", ""]}, key]},
            # A position stored before keys existed is never moved back past its moment.
            {"$not": [{"$gt": [f"${field}.at", message["createdAt"]]}]},
        ]}
        position = {"messageId": message["_id"], "at": message["createdAt"], "key": key}
        fields[field] = {"$cond": [further, {"$literal": position}, f"${field}"]}
    return [{"$set": fields}]


def _read_position_change(user_id: str, message_id: ObjectId, at: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """(condition, $set) moving a member's read position forward to the message."""
    field = f"reads.{user_id}"
    key = order_key(at, message_id)
    return ({"memberIds": user_id, f"{field}.key": {"$not": {"$gte": key}},
             # A position stored before keys existed is never moved back past its moment.
             f"{field}.at": {"$not": {"$gt": at}}},
            {field: {"messageId": message_id, "at": at, "key": key}})
