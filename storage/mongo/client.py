"""The MongoDB client (PyMongo's async API) and index management."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.read_preferences import ReadPreference, _ServerMode, make_read_preference, read_pref_mode_from_name

from kernel.settings import ConfigError, Settings
from kernel.tasks import cancel_and_wait
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


def stale_read_preference(settings: Settings) -> _ServerMode:
    """The read preference of reads that tolerate staleness (PULSE_MONGO_READ_PREFERENCE,
    PULSE_MONGO_MAX_STALENESS_SECONDS); raises ConfigError for values MongoDB refuses."""
    name, staleness = settings.mongo_read_preference, settings.mongo_max_staleness_seconds
    try:
        mode = read_pref_mode_from_name(name)
    except (KeyError, ValueError):
        raise ConfigError(f"PULSE_MONGO_READ_PREFERENCE must be one of primary, primaryPreferred, secondary, "
                          f"secondaryPreferred, nearest; got {name!r}") from None
    if staleness != -1 and (staleness < 90 or mode == ReadPreference.PRIMARY.mode):
        raise ConfigError("PULSE_MONGO_MAX_STALENESS_SECONDS must be -1, or at least 90 with a "
                          f"non-primary PULSE_MONGO_READ_PREFERENCE; got {staleness}")
    if mode == ReadPreference.PRIMARY.mode:
        return ReadPreference.PRIMARY
    return make_read_preference(mode, None, max_staleness=staleness)


class ReplicaSetLag:
    """Seconds each member's last applied write is behind the primary's, from
    ``replSetGetStatus`` (sampled in the background: a metrics scrape cannot wait on
    MongoDB). Empty on a server that is not a replica set member, or that refuses the
    command (a standalone): absent from /metrics, not an error."""

    def __init__(self, client: AsyncMongoClient, interval: float) -> None:
        self._client = client
        self._interval = interval
        self.members: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    async def sample(self) -> None:
        try:
            status = await self._client.admin.command("replSetGetStatus")
        except OperationFailure:  # not a replica set (NoReplicationEnabled) or not allowed
            self.members = {}
            return
        members = status.get("members") or []
        primary = next((m for m in members if m.get("stateStr") == "PRIMARY"), None)
        if primary is None or primary.get("optimeDate") is None:
            self.members = {}
            return
        # The primary too (0): shows the set is measured even with no secondary.
        self.members = {m["name"]: max(0.0, (primary["optimeDate"] - m["optimeDate"]).total_seconds())
                        for m in members if m.get("optimeDate") is not None
                        and m.get("stateStr") in ("PRIMARY", "SECONDARY")}

    def start(self) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.sample()
                except (PyMongoError, OSError) as exc:
                    log.debug("replica set lag not sampled: %s", exc)
                    self.members = {}
                await asyncio.sleep(self._interval)

        self._task = asyncio.create_task(loop(), name="mongo-replica-lag")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


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
    """Creates the indexes, then drops the retired ones (in that order: a replaced unique
    index keeps guarding until its successor exists)."""
    for collection, keys, options in indexes_for(settings):
        try:
            await db[collection].create_index(keys, **options)
        except OperationFailure as exc:
            if exc.code not in _INDEX_CONFLICTS or "expireAfterSeconds" not in options:
                raise
            # A changed TTL setting: adjust the existing index in place.
            await db.command("collMod", collection, index={
                "name": options["name"], "expireAfterSeconds": options["expireAfterSeconds"]})
    for collection, name in RETIRED_INDEXES:
        try:
            await db[collection].drop_index(name)
        except OperationFailure as exc:
            if exc.code not in _NO_SUCH_INDEX:
                raise


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
