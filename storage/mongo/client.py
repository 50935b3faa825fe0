"""The MongoDB client (PyMongo's async API) and index management."""
from __future__ import annotations

import asyncio
import logging

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from server.config import Settings
from pymongo.errors import OperationFailure

from storage.mongo.indexes import indexes_for

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


# IndexOptionsConflict / IndexKeySpecsConflict: an index of that name exists with other options.
_INDEX_CONFLICTS = (85, 86)


async def ensure_indexes(db: AsyncDatabase, settings: Settings) -> None:
    for collection, keys, options in indexes_for(settings):
        try:
            await db[collection].create_index(keys, **options)
        except OperationFailure as exc:
            if exc.code not in _INDEX_CONFLICTS or "expireAfterSeconds" not in options:
                raise
            # A changed TTL setting: adjust the existing index in place.
            await db.command("collMod", collection, index={
                "name": options["name"], "expireAfterSeconds": options["expireAfterSeconds"]})


async def ensure_indexes_until_done(db: AsyncDatabase, settings: Settings) -> None:
    """Keeps trying in the background when MongoDB was down at start."""
    delay = 1.0
    while True:
        try:
            await ensure_indexes(db, settings)
            log.info("MongoDB indexes ensured")
            return
        except Exception as exc:  # noqa: BLE001 - keep trying whatever the failure
            log.warning("MongoDB indexes not ensured yet (%s); retrying in %.0fs", exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
