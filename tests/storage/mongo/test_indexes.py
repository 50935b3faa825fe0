"""The Mongo indexes the app relies on exist with the right options, and a changed
notification TTL is applied to the existing index."""
from __future__ import annotations

import uuid

import pytest
from pymongo import AsyncMongoClient

from storage.mongo.client import ensure_indexes

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_indexes_are_ensured_with_their_options(server, settings):
    from server import appkeys

    db = server.app[appkeys.MONGO_DB]
    messages = await db["messages"].index_information()
    assert messages["conversation_history_order"]["key"] == [("conversationId", 1), ("createdAt", -1), ("_id", -1)]
    assert messages["conversation_sender_client_id"]["unique"] is True
    assert messages["conversation_sender_client_id"]["key"] == [("conversationId", 1), ("senderId", 1), ("clientId", 1)]
    assert "sender_client_id" not in messages  # retired: not led by the shard key
    conversations = await db["conversations"].index_information()
    assert conversations["direct_pair"]["unique"] is True
    assert conversations["members_activity"]["key"][0] == ("memberIds", 1)
    notifications = await db["notifications"].index_information()
    assert notifications["user_recent_order"]["key"] == [("userId", 1), ("createdAt", -1), ("_id", -1)]
    assert notifications["user_read"]["key"] == [("userId", 1), ("read", 1)]
    assert notifications["user_source"]["unique"] is True
    assert notifications["expire_after_ttl"]["expireAfterSeconds"] == settings.notification_ttl_days * 86400


async def test_changed_ttl_updates_the_existing_index(settings):
    client = AsyncMongoClient(settings.mongo_url)
    db = client[f"indexes_{uuid.uuid4().hex[:8]}"]
    try:
        await ensure_indexes(db, settings)
        await ensure_indexes(db, settings)  # idempotent
        await ensure_indexes(db, settings.replace(notification_ttl_days=7))
        info = await db["notifications"].index_information()
        assert info["expire_after_ttl"]["expireAfterSeconds"] == 7 * 86400
    finally:
        await client.drop_database(db.name)
        await client.close()


async def test_retired_indexes_are_dropped(settings):
    client = AsyncMongoClient(settings.mongo_url)
    db = client[f"indexes_{uuid.uuid4().hex[:8]}"]
    try:
        await ensure_indexes(db, settings)  # a fresh database: nothing to drop, no error
        await db["messages"].create_index([("conversationId", 1), ("createdAt", -1)], name="conversation_history")
        await db["notifications"].create_index([("userId", 1), ("createdAt", -1)], name="user_recent")
        await ensure_indexes(db, settings)
        assert "conversation_history" not in await db["messages"].index_information()
        assert "user_recent" not in await db["notifications"].index_information()
        assert "conversation_history_order" in await db["messages"].index_information()
    finally:
        await client.drop_database(db.name)
        await client.close()


async def test_group_indexes_allow_one_open_group_and_count_each_actor_once(server, settings):
    from server import appkeys

    db = server.app[appkeys.MONGO_DB]
    notifications = await db["notifications"].index_information()
    assert notifications["user_open_group"]["unique"] is True
    assert notifications["user_open_group"]["key"] == [("userId", 1), ("openKey", 1)]
    contributions = await db["notification_contributions"].index_information()
    assert contributions["user_source"]["unique"] is True
    assert contributions["user_group_actor"]["unique"] is True
    assert contributions["user_group_actor"]["key"] == [("userId", 1), ("groupId", 1), ("actorId", 1)]
    assert contributions["actor"]["key"] == [("actorId", 1)]
    assert contributions["expire_after_ttl"]["expireAfterSeconds"] == (
        settings.notification_ttl_days * 86400 + settings.notification_group_seconds + 86400)
