"""Conversations: members, kind, title, last message and each member's read position.

Document: ``{_id: ObjectId, kind, title, memberIds: [user id], directKey?: "a:b",
createdAt, lastActivityAt, lastMessage: message document (createdAt, _id first) | null, lastMessageKey,
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
        messages and senders there are. The last message moves by ``$max`` on its key (see
        ``last_message_value``), so whatever was recorded meanwhile (by another instance,
        say) needs no condition; the update's conditions are that none of the messages is
        among the recent ones yet and that each sender's read position is behind their
        newest one (both nearly always hold). When one did not hold somewhere, a second round
        trip does each part on its own condition, as ``record_message`` and ``advance_read``
        do (the parts already done are not done twice)."""
        if not messages:
            return
        batch = [(conversation_id, sorted(docs, key=_key)) for conversation_id, docs in messages.items() if docs]
        merged = [UpdateOne(*_new_messages_change(cid, docs, self.recent_max)) for cid, docs in batch]
        if (await self.collection.bulk_write(merged, ordered=False)).matched_count == len(merged):
            return
        one_by_one = []
        for cid, docs in batch:
            one_by_one.append(UpdateOne({"_id": cid}, {"$max": _newest_changes(docs[-1])}))
            for message in docs:
                key = _key(message)
                one_by_one.append(UpdateOne({"_id": cid, "recent.key": {"$ne": key}}, {"$push": {"recent": {
                    "$each": [{"key": key, "senderId": message["senderId"]}], "$sort": {"key": 1},
                    "$slice": -self.recent_max}}}))
            for sender_id, message in _newest_by_sender(docs).items():
                when, position = _read_position_change(sender_id, message["_id"], message["createdAt"])
                one_by_one.append(UpdateOne({"_id": cid, **when}, {"$set": position}))
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
        await self.collection.update_one({"_id": conversation_id, "lastMessage.senderId": sender_id}, {"$set": {
            "lastMessage": last_message_value(message) if message else None, "lastMessageKey": key}})

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
            {"$set": {"lastMessage": last_message_value(message), "lastMessageKey": key},
             "$push": {"recent": {"$each": [{"key": key, "senderId": message["senderId"]}],
                                  "$sort": {"key": 1}, "$slice": -recent_max}},
             # Never moves back, even past a conversation stored before lastMessageKey existed.
             "$max": {"lastActivityAt": message["createdAt"]}})


def _key(message: dict[str, Any]) -> str:
    return order_key(message["createdAt"], message["_id"])


def last_message_value(message: dict[str, Any]) -> dict[str, Any]:
    """The message as the conversation's ``lastMessage``: ``createdAt`` then ``_id`` first,
    so that ``$max`` keeps the newer of two in (createdAt, _id) order — documents compare
    pair by pair, each by type, then name, then value. One stored before this form starts
    with ``_id``: an ObjectId, which sorts below a date, so any message replaces it."""
    return {"createdAt": message["createdAt"], "_id": message["_id"], **message}


def _newest_changes(newest: dict[str, Any]) -> dict[str, Any]:
    """``$max`` operands making ``newest`` the last message unless a newer one is there."""
    return {"lastMessage": last_message_value(newest), "lastMessageKey": _key(newest),
            # Never moves back, even past a conversation stored before lastMessageKey existed.
            "lastActivityAt": newest["createdAt"]}


def _newest_by_sender(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["senderId"]: m for m in messages}  # oldest first: each sender's last one wins


def _new_messages_change(conversation_id: ObjectId, messages: list[dict[str, Any]],
                         recent_max: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(filter, update) recording ``messages`` (oldest first, just stored) in one write."""
    keys = [_key(m) for m in messages]
    query: dict[str, Any] = {"_id": conversation_id, "recent.key": {"$nin": keys}}
    update: dict[str, Any] = {
        "$max": _newest_changes(messages[-1]),
        "$push": {"recent": {"$each": [{"key": k, "senderId": m["senderId"]} for k, m in zip(keys, messages)],
                             "$sort": {"key": 1}, "$slice": -recent_max}},
        "$set": {},
    }
    senders = _newest_by_sender(messages)
    for sender_id, message in senders.items():
        when, position = _read_position_change(sender_id, message["_id"], message["createdAt"])
        when.pop("memberIds")
        query.update(when)
        update["$set"].update(position)
    query["memberIds"] = next(iter(senders)) if len(senders) == 1 else {"$all": list(senders)}
    return query, update


def _read_position_change(user_id: str, message_id: ObjectId, at: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """(condition, $set) moving a member's read position forward to the message."""
    field = f"reads.{user_id}"
    key = order_key(at, message_id)
    return ({"memberIds": user_id, f"{field}.key": {"$not": {"$gte": key}},
             # A position stored before keys existed is never moved back past its moment.
             f"{field}.at": {"$not": {"$gt": at}}},
            {field: {"messageId": message_id, "at": at, "key": key}})
