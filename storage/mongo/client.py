"""The MongoDB client (PyMongo's async API) and index management."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from server.config import Settings

from storage.mongo.indexes import RETIRED_INDEXES, indexes_for

log = logging.getLogger("pulse.mongo")


WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})
READ_COMMANDS = frozenset({"find", "getMore", "aggregate", "count", "distinct"})


class CommandTimer(monitoring.CommandListener):
    """Reports how long each data command took, as the driver saw it (server time plus the
    wire), to ``observe(kind, command, seconds)``; kind is "read" or "write". Handshakes,
    pings and index builds are not data traffic and are left out."""

    def __init__(self, observe: Callable[[str, str, float], None]) -> None:
        self._observe = observe

    def _report(self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent) -> None:
        name = event.command_name
        kind = "write" if name in WRITE_COMMANDS else "read" if name in READ_COMMANDS else None
        if kind is not None:
            self._observe(kind, name, event.duration_micros / 1_000_000)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._report(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._report(event)


def create_mongo(
    settings: Settings, *, listeners: list[monitoring.CommandListener] | None = None,
) -> tuple[AsyncMongoClient, AsyncDatabase]:
    assert settings.mongo_url, "mongo_url is required"
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_url,
        event_listeners=listeners or [],
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
# IndexNotFound, and NamespaceNotFound (the collection does not exist yet).
_NO_SUCH_INDEX = (27, 26)


async def ensure_indexes(db: AsyncDatabase, settings: Settings) -> None:
    for collection, name in RETIRED_INDEXES:
        try:
            await db[collection].drop_index(name)
        except OperationFailure as exc:
            if exc.code not in _NO_SUCH_INDEX:
                raise
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
