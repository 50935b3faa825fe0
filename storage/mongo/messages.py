"""Chat messages: ``{_id: ObjectId, conversationId, senderId, body, clientId, createdAt,
pushPending?}`` (``pushPending``: its push to the members' replay logs failed, and a retry
of the send pushes it; older messages carry it from their insert until their push).

Sharded by ``conversationId`` (a string; ranged: the send-idempotency index is unique,
which MongoDB allows only on a ranged key it starts with). Every query of the chat paths
names one conversation, so a shard cluster sends it to one shard; only the privacy
export and erasure of a user's messages (by ``senderId``) go to every shard. History is
read newest first on (createdAt, _id).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_preferences import ReadPreference, _ServerMode

from storage.mongo.errors import mongo_boundary
from storage.mongo.values import BatchInsert, count_after, insert_batch, insert_unique, keyset_page


SHARD_KEY: dict[str, int] = {"conversationId": 1}
# The unique index that tells a retried send apart (indexes.py creates it).
CLIENT_ID_INDEX = "conversation_sender_client_id"
CLIENT_ID_KEYS = ("conversationId", "senderId", "clientId")


@mongo_boundary
class MessagesRepo:
    def __init__(self, db: AsyncDatabase, stale_reads: _ServerMode = ReadPreference.PRIMARY) -> None:
        self.collection = db["messages"]
        # For history pages older than the newest only: a page back in time tolerates a
        # secondary's staleness; the newest page must show the message just sent.
        self.stale_ok = self.collection.with_options(read_preference=stale_reads)

    async def insert(self, doc: dict[str, Any]) -> bool:
        """False when the sender already stored a message with this client id."""
        return await insert_unique(self.collection, doc)

    async def insert_batch(self, docs: list[dict[str, Any]]) -> BatchInsert:
        """One round trip for many sends; which were retries (their client id is stored
        already) and which were refused, by position."""
        return await insert_batch(self.collection, docs, CLIENT_ID_INDEX, CLIENT_ID_KEYS)

    async def mark_pushed(self, conversation_id: str, message_id: ObjectId) -> None:
        await self.collection.update_one({"_id": message_id, "conversationId": conversation_id},
                                         {"$unset": {"pushPending": ""}})

    async def mark_push_pending(self, message_ids: list[ObjectId]) -> None:
        await self.collection.update_many({"_id": {"$in": message_ids}}, {"$set": {"pushPending": True}})

    async def get_by_client_id(self, conversation_id: str, sender_id: str, client_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"conversationId": conversation_id, "senderId": sender_id,
                                               "clientId": client_id})

    async def get_by_client_ids(self, conversation_id: str, sender_id: str,
                                client_ids: list[str]) -> list[dict[str, Any]]:
        """The sender's stored messages of the conversation with those client ids: one
        indexed query (an ``$in`` on the index's last key; none on the others, and no
        ``$or``, which some engines answer with a scan)."""
        return await self.collection.find({"conversationId": conversation_id, "senderId": sender_id,
                                           "clientId": {"$in": client_ids}}).to_list(None)

    async def get_in_conversation(self, conversation_id: str, message_id: ObjectId) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": message_id, "conversationId": conversation_id})

    async def history(
        self, conversation_id: str, limit: int, before: tuple[datetime, ObjectId] | None,
    ) -> list[dict[str, Any]]:
        """Newest first; ``before`` is the (createdAt, _id) of a message to page back from."""
        collection = self.collection if before is None else self.stale_ok
        return await keyset_page(collection, {"conversationId": conversation_id}, "createdAt", before, limit,
                                 newest_first=True)

    async def count_unread(
        self, conversation_id: str, user_id: str, read_up_to: tuple[datetime, ObjectId] | None, *, limit: int,
    ) -> int:
        """Messages from others after the member's read position (all of them without one),
        counting at most ``limit``. Only for conversations stored before they kept their
        recent messages (see ``ConversationsRepo``): the range is read whole on some engines."""
        query: dict[str, Any] = {"conversationId": conversation_id, "senderId": {"$ne": user_id}}
        if read_up_to is None:
            return await self.collection.count_documents(query, limit=limit)
        return min(limit, await count_after(self.collection, query, "createdAt", read_up_to, limit=limit))

    # --- privacy (export, erasure) ------------------------------------------------------

    async def page_by_sender(self, sender_id: str, after: ObjectId | None, limit: int) -> list[dict[str, Any]]:
        """A page of the messages a user sent, oldest first (keyset on _id)."""
        query: dict[str, Any] = {"senderId": sender_id}
        if after is not None:
            query["_id"] = {"$gt": after}
        return await self.collection.find(query).sort("_id", 1).limit(limit).to_list(None)

    async def delete_by_sender(self, sender_id: str) -> int:
        return (await self.collection.delete_many({"senderId": sender_id})).deleted_count

    async def latest_in_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"conversationId": conversation_id},
                                              sort=[("createdAt", -1), ("_id", -1)])

    async def delete_in_conversation(self, conversation_id: str) -> int:
        return (await self.collection.delete_many({"conversationId": conversation_id})).deleted_count
