"""Notifications: ``{_id: ObjectId, userId, type, message, read, createdAt,
metadata: {postId?, actorId?, eventId?, conversationId?}, sourceId?}``.

Sharded by ``userId`` (ranged: user ids are random UUIDs, so users spread over the
shards; the one-per-cause index is unique and starts with it). Every query but the
privacy erasure of notifications *about* a user names the recipient. ``sourceId`` names what caused the notification
(a domain event id, a message id) so a cause handled twice notifies once. Expired by
the TTL index on ``createdAt``.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_preferences import ReadPreference, _ServerMode

from storage.mongo.errors import mongo_boundary
from storage.mongo.notification_groups import VISIBLE
from storage.mongo.values import insert_new, keyset_page


SHARD_KEY: dict[str, int] = {"userId": 1}


@mongo_boundary
class NotificationsRepo:
    def __init__(self, db: AsyncDatabase, stale_reads: _ServerMode = ReadPreference.PRIMARY) -> None:
        self.collection = db["notifications"]
        # For the list only (a notification seconds late is harmless); the unread count,
        # mark-read and the one-per-cause look-ups stay on the primary.
        self.stale_ok = self.collection.with_options(read_preference=stale_reads)

    async def insert_new(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stores the notifications in one round trip; returns those stored, leaving out
        users who already have one from the same source."""
        return await insert_new(self.collection, docs)

    async def delete_ids(self, ids: list[ObjectId]) -> int:
        return (await self.collection.delete_many({"_id": {"$in": ids}})).deleted_count

    async def forget_actor(self, ids: list[ObjectId]) -> None:
        await self.collection.update_many({"_id": {"$in": ids}}, {"$unset": {"metadata.actorId": ""}})

    async def list_for_user(
        self, user_id: str, *, unread_only: bool, limit: int, after: tuple[datetime, ObjectId] | None,
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"userId": user_id}
        if unread_only:
            query["read"] = False  # (a group is unread only once counted)
        else:
            query.update(VISIBLE)
        return await keyset_page(self.stale_ok, query, "createdAt", after, limit, newest_first=True)

    async def count_unread(self, user_id: str) -> int:
        # A group is one notification here, and unread only once counted.
        return await self.collection.count_documents({"userId": user_id, "read": False})

    async def mark_read(self, user_id: str, notification_id: ObjectId) -> dict[str, Any] | None:
        """The notification after the change; None when it is not the user's."""
        return await self.collection.find_one_and_update(
            {"_id": notification_id, "userId": user_id}, {"$set": {"read": True}},
            return_document=ReturnDocument.AFTER,
        )

    async def mark_all_read(self, user_id: str) -> int:
        result = await self.collection.update_many({"userId": user_id, "read": False}, {"$set": {"read": True}})
        return result.modified_count

    # --- privacy (export, erasure) ------------------------------------------------------

    async def page_for_user(self, user_id: str, after: tuple[datetime, ObjectId] | None,
                            limit: int) -> list[dict[str, Any]]:
        """A page of a user's notifications, oldest first (keyset on createdAt, _id)."""
        return await keyset_page(self.collection, {"userId": user_id, **VISIBLE}, "createdAt", after, limit,
                                 newest_first=False)

    async def recipients_about(self, actor_id: str) -> list[str]:
        """Erasure: the users holding a notification about ``actor_id`` (each once)."""
        recipients: dict[str, None] = {}
        async for doc in self.collection.find({"metadata.actorId": actor_id}, {"userId": 1, "_id": 0}):
            recipients[doc["userId"]] = None
        return list(recipients)

    async def delete_for_or_about(self, user_id: str) -> int:
        """Erasure: the user's notifications and those others got about them."""
        result = await self.collection.delete_many({"$or": [{"userId": user_id}, {"metadata.actorId": user_id}]})
        return result.deleted_count
