"""Which store a driver exception came from, so callers can answer 503 naming it."""
from __future__ import annotations

import asyncio

import asyncpg
import pymongo.errors

from kernel.errors import StoreUnavailable
from storage.redis.client import REDIS_UNAVAILABLE

_PG_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.QueryCanceledError,  # statement_timeout: the store is overloaded or stuck
    asyncpg.TooManyConnectionsError,
    # The server was shut down or crashed under a running statement.
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
_MONGO_UNAVAILABLE = (
    pymongo.errors.ConnectionFailure,
    pymongo.errors.ServerSelectionTimeoutError,
    pymongo.errors.NetworkTimeout,
    pymongo.errors.AutoReconnect,
)


def store_of(exc: BaseException) -> str | None:
    """Name of the store that ``exc`` says is unreachable, or None if it is not such an error."""
    if isinstance(exc, StoreUnavailable):
        return exc.store
    if isinstance(exc, _PG_UNAVAILABLE):
        return "postgres"
    if isinstance(exc, _MONGO_UNAVAILABLE):
        return "mongo"
    if isinstance(exc, REDIS_UNAVAILABLE):
        return "redis"
    return None


def as_unavailable(exc: BaseException) -> StoreUnavailable | None:
    store = store_of(exc)
    return None if store is None else (exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(store))


# Raised by the pool when no connection could be had in time (server down or pool exhausted).
POOL_TIMEOUT = (asyncio.TimeoutError, OSError)
