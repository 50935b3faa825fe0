"""The MongoDB client (PyMongo's async API) and index management."""
from __future__ import annotations

import asyncio
import logging

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from server.config import Settings
from storage.mongo.indexes import INDEXES

log = logging.getLogger("pulse.mongo")


def create_mongo(settings: Settings) -> tuple[AsyncMongoClient, AsyncDatabase]:
    assert settings.mongo_url, "mongo_url is required"
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_url,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=settings.mongo_timeout_ms,
        connectTimeoutMS=settings.mongo_timeout_ms,
        socketTimeoutMS=max(5000, settings.mongo_timeout_ms * 2),
        appname=f"pulse:{settings.instance_id}",
    )
    return client, client[settings.mongo_db]


async def ensure_indexes(db: AsyncDatabase) -> None:
    for collection, keys, options in INDEXES:
        await db[collection].create_index(keys, **options)


async def ensure_indexes_until_done(db: AsyncDatabase, first_error: BaseException | None = None) -> None:
    """Keeps trying in the background when MongoDB was down at start."""
    delay = 1.0
    while True:
        try:
            await ensure_indexes(db)
            log.info("MongoDB indexes ensured")
            return
        except Exception as exc:  # noqa: BLE001 - keep trying whatever the failure
            log.warning("MongoDB indexes not ensured yet (%s); retrying in %.0fs", exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
