"""The PostgreSQL pools: a primary for writes and read-your-own-writes reads, and an
optional replica for reads that tolerate lag. Repositories take a connection from here.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

import asyncpg
import orjson

from server.config import Settings
from server.errors import StoreUnavailable

log = logging.getLogger("pulse.postgres")


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns round-trip as Python objects, encoded with orjson.
    await conn.set_type_codec(
        "jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg has already rolled back a transaction left open
    and dropped listeners; its default reset then runs ``SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`` — a round trip on every release, for session state
    pooled connections never carry here (no SET, LISTEN, cursors; the one advisory lock
    holder goes through ``Database.session()``, which resets itself)."""


async def create_pool(dsn: str, settings: Settings, *, min_size: int | None = None) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn=dsn,
        min_size=settings.pg_pool_min if min_size is None else min_size,
        max_size=settings.pg_pool_max,
        max_inactive_connection_lifetime=settings.pg_idle_seconds,
        timeout=settings.pg_connect_timeout_seconds,
        server_settings={
            "statement_timeout": str(settings.pg_statement_timeout_ms),
            "application_name": f"pulse:{settings.instance_id}"[:63],
        },
        init=_init_connection,
        reset=_keep_session,
    )


PEAK_WINDOW_SECONDS = 10


class RecentPeak:
    """The highest value recorded in the last ``seconds`` (whole seconds, one slot each), so
    a scrape every few seconds sees every peak, and an old burst does not hide a quiet now."""

    def __init__(self, seconds: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots: list[tuple[int, int]] = [(-1, 0)] * seconds

    def record(self, value: int) -> None:
        second = int(self._clock())
        index = second % len(self._slots)
        at, peak = self._slots[index]
        self._slots[index] = (second, max(peak, value) if at == second else value)

    def value(self) -> int:
        now = int(self._clock())
        return max((peak for at, peak in self._slots if now - at < len(self._slots)), default=0)


class Database:
    """Owns the pools. ``transaction()`` for writes, ``read()`` for reads."""

    def __init__(self, primary: asyncpg.Pool, replica: asyncpg.Pool | None, settings: Settings) -> None:
        self.primary = primary
        self.replica = replica
        self._acquire_timeout = settings.pg_acquire_timeout_seconds
        self.replica_failures = 0
        # Reads served per pool (``read()`` only): shows where lag-tolerant reads go.
        self.reads = {"primary": 0, "replica": 0}
        # Primary pool pressure that a periodic sample of "in use" would miss: the most
        # connections in use at once lately, and acquisitions that found every connection busy.
        self.in_use_peak = RecentPeak(PEAK_WINDOW_SECONDS)
        self.exhausted = 0

    @classmethod
    async def connect(cls, settings: Settings) -> "Database":
        assert settings.postgres_dsn, "postgres_dsn is required"
        try:
            primary = await create_pool(settings.postgres_dsn, settings)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable("postgres", f"cannot connect to PostgreSQL: {exc}") from exc
        replica = None
        if settings.postgres_replica_dsn:
            # The replica is optional: min_size=0 so a replica that is down at start does
            # not stop the app; reads fall back to the primary.
            replica = await create_pool(settings.postgres_replica_dsn, settings, min_size=0)
        return cls(primary, replica, settings)

    async def close(self) -> None:
        pools = [self.primary] + ([self.replica] if self.replica else [])
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)

    @asynccontextmanager
    async def _acquire(self, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
        primary = pool is self.primary
        if primary and pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
            self.exhausted += 1
        try:
            conn = await pool.acquire(timeout=self._acquire_timeout)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
                asyncpg.CannotConnectNowError) as exc:
            raise StoreUnavailable("postgres") from exc
        if primary:
            self.in_use_peak.record(pool.get_size() - pool.get_idle_size())
        try:
            yield conn
        finally:
            await pool.release(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A primary connection outside a transaction (single statements, autocommit)."""
        async with self._acquire(self.primary) as conn:
            yield conn

    @asynccontextmanager
    async def session(self) -> AsyncIterator[asyncpg.Connection]:
        """A primary connection for session state (advisory locks): fully reset before
        it goes back to the pool, or closed when the reset does not complete."""
        async with self._acquire(self.primary) as conn:
            try:
                yield conn
            finally:
                try:
                    await conn.execute(conn.get_reset_query())
                except BaseException:
                    conn.terminate()  # the server ends the session and its locks
                    raise

    @asynccontextmanager
    async def transaction(self, isolation: str = "read_committed") -> AsyncIterator[asyncpg.Connection]:
        async with self._acquire(self.primary) as conn:
            async with conn.transaction(isolation=isolation):
                yield conn

    @asynccontextmanager
    async def read(self, *, lag_ok: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A connection for reads. ``lag_ok=True`` prefers the replica (falls back to the
        primary when the replica is down); otherwise reads see the caller's own writes."""
        if lag_ok and self.replica is not None:
            conn = None
            try:
                conn = await self.replica.acquire(timeout=self._acquire_timeout)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.replica_failures += 1
                log.warning("replica unavailable, reading from primary: %s", exc)
            if conn is not None:
                self.reads["replica"] += 1
                try:
                    yield conn
                finally:
                    await self.replica.release(conn)
                return
        async with self._acquire(self.primary) as conn:
            self.reads["primary"] += 1
            yield conn

    async def ping_replica(self) -> None:
        """Raises when a replica is configured and does not answer (for /readyz)."""
        if self.replica is None:
            return
        async with self._acquire(self.replica) as conn:
            await conn.fetchval("SELECT 1")

    def read_stats(self) -> dict[str, int]:
        return {**{f"reads_{pool}": n for pool, n in self.reads.items()}, "replica_fallbacks": self.replica_failures}

    def pool_stats(self) -> dict[str, int]:
        size = self.primary.get_size()
        return {"size": size, "idle": self.primary.get_idle_size(), "in_use": size - self.primary.get_idle_size(),
                "max": self.primary.get_max_size(), "in_use_peak": self.in_use_peak.value(), "exhausted": self.exhausted}
