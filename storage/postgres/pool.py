"""The PostgreSQL pools: a primary for writes and read-your-own-writes reads, and an
optional replica for reads that tolerate lag. Repositories take a connection from here.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Iterable, Protocol
from urllib.parse import urlsplit

import asyncpg
import orjson

from kernel.errors import StoreUnavailable
from kernel.settings import Settings
from storage.postgres.replica_lag import PRIMARY_POSITION, ReplicaLagMonitor

log = logging.getLogger("pulse.postgres")

# What asyncpg raises when PostgreSQL does not answer: the store is unavailable, not the
# statement wrong. Raised while a connection of ``Database`` is held, they leave it as
# StoreUnavailable (the repositories run on those connections).
PG_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.QueryCanceledError,  # statement_timeout: the store is overloaded or stuck
    asyncpg.TooManyConnectionsError,
    # The server was shut down or crashed under a running statement.
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


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


class WriteMarksPort(Protocol):
    """Where the primary's position after each user's latest write is shared between
    instances (storage/redis/write_marks.py). Both methods may raise."""

    async def mark(self, user_ids: Iterable[str], position: int) -> None: ...

    async def newest(self, user_ids: Iterable[str]) -> int: ...


# Why a lag-tolerant read was served by the primary.
FALLBACK_REASONS = ("unavailable", "lagging", "own_writes")


def replica_name(dsn: str) -> str:
    """host:port of a DSN, for metrics (never the credentials)."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


class Database:
    """Owns the pools. ``transaction()`` for writes, ``read()`` for reads.

    Lag-tolerant reads go to the replica while the lag monitor says it is no further
    behind than ``pg_replica_max_lag_ms``, and the users whose writes the read must show
    (``writes_of``) have no write the replica has not replayed yet."""

    def __init__(self, primary: asyncpg.Pool, replica: asyncpg.Pool | None, settings: Settings,
                 monitor: ReplicaLagMonitor | None = None) -> None:
        self.primary = primary
        self.replica = replica
        self.monitor = monitor
        self.replica_name = replica_name(settings.postgres_replica_dsn) if replica is not None else None
        self.write_marks: WriteMarksPort | None = None
        self._acquire_timeout = settings.pg_acquire_timeout_seconds
        # Lag-tolerant reads the primary served instead of the replica, by reason.
        self.fallbacks = dict.fromkeys(FALLBACK_REASONS, 0)
        self.write_mark_failures = 0
        # Reads served per pool (``read()`` only): shows where lag-tolerant reads go.
        self.reads = {"primary": 0, "replica": 0}
        # Primary pool pressure that a periodic sample of "in use" would miss: the most
        # connections in use at once lately, and acquisitions that found every connection busy.
        self.in_use_peak = RecentPeak(PEAK_WINDOW_SECONDS)
        self._primary_in_use = 0
        self.exhausted = 0

    @classmethod
    async def connect(cls, settings: Settings) -> "Database":
        assert settings.postgres_dsn, "postgres_dsn is required"
        try:
            primary = await create_pool(settings.postgres_dsn, settings)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable("postgres", f"cannot connect to PostgreSQL: {exc}") from exc
        replica = monitor = None
        if settings.postgres_replica_dsn:
            # The replica is optional: min_size=0 so a replica that is down at start does
            # not stop the app; reads fall back to the primary.
            replica = await create_pool(settings.postgres_replica_dsn, settings, min_size=0)
            monitor = ReplicaLagMonitor(
                settings.postgres_dsn, settings.postgres_replica_dsn,
                interval=settings.pg_replica_lag_interval_ms / 1000,
                stale_after=settings.pg_replica_lag_stale_ms / 1000,
                max_lag=settings.pg_replica_max_lag_ms / 1000,
                connect_timeout=settings.pg_connect_timeout_seconds,
            )
            monitor.start()
        return cls(primary, replica, settings, monitor)

    def track_writes(self, marks: WriteMarksPort) -> None:
        """Share write positions through ``marks`` (read-your-own-writes across instances)."""
        self.write_marks = marks

    async def close(self) -> None:
        if self.monitor is not None:
            await self.monitor.stop()
        pools = [self.primary] + ([self.replica] if self.replica else [])
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)

    @asynccontextmanager
    async def _acquire(self, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
        primary = pool is self.primary
        # Connections in use counted here (every primary acquisition comes through this):
        # asyncpg's get_idle_size() walks the whole pool, twice per acquisition before.
        if primary and self._primary_in_use >= pool.get_max_size():
            self.exhausted += 1
        try:
            conn = await pool.acquire(timeout=self._acquire_timeout)
        except (OSError, asyncio.TimeoutError, *PG_UNAVAILABLE) as exc:
            # PG_UNAVAILABLE too: a new connection refused ("too many clients") is an outage.
            raise StoreUnavailable("postgres") from exc
        if primary:
            self._primary_in_use += 1
            self.in_use_peak.record(self._primary_in_use)
        try:
            yield conn
        except PG_UNAVAILABLE as exc:
            raise StoreUnavailable("postgres") from exc
        finally:
            if primary:
                self._primary_in_use -= 1
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
    async def transaction(self, isolation: str = "read_committed", *,
                          writes_of: Iterable[str] = ()) -> AsyncIterator[asyncpg.Connection]:
        """``writes_of``: the users whose data this changes; their lag-tolerant reads skip
        the replica until it has replayed this commit. Read after the body has run, so a
        transaction can name a user it creates."""
        position = None
        async with self._acquire(self.primary) as conn:
            async with conn.transaction(isolation=isolation):
                yield conn
            writers = [str(u) for u in writes_of] if self.replica is not None and self.write_marks else []
            if writers:
                position = await conn.fetchval(PRIMARY_POSITION)  # at or past the commit record
        if position is not None:
            await self._mark_writes(writers, position)

    async def _mark_writes(self, writers: list[str], position: int) -> None:
        try:
            await self.write_marks.mark(writers, position)
        except Exception as exc:  # noqa: BLE001 - committed already; Redis down must not fail it
            # Unmarked, the writers' next reads may come from a replica that is within the
            # lag limit but not yet past this commit.
            self.write_mark_failures += 1
            log.warning("write position of %s not shared (Redis unavailable?): %s", writers, exc)

    async def _replica_may_serve(self, writes_of: Iterable[str]) -> bool:
        if not self.monitor.caught_up():
            self.fallbacks["lagging"] += 1
            return False
        writers = [str(u) for u in writes_of if u]
        if writers and self.write_marks is not None:  # (a replica comes with a monitor)
            try:
                newest = await self.write_marks.newest(writers)
            except Exception as exc:  # noqa: BLE001 - unknown marks: the primary is always right
                log.warning("write positions unavailable, reading from primary: %s", exc)
                newest = None
            replayed = self.monitor.lag.replayed
            if newest is None or (newest and (replayed is None or replayed < newest)):
                self.fallbacks["own_writes"] += 1
                return False
        return True

    @asynccontextmanager
    async def read(self, *, lag_ok: bool = False,
                   writes_of: Iterable[str | None] = ()) -> AsyncIterator[asyncpg.Connection]:
        """A connection for reads. ``lag_ok=True`` prefers the replica (the primary when
        the replica is down, behind by more than the limit, or has not replayed the latest
        write of a user in ``writes_of`` — pass the viewer, so they read their own writes);
        otherwise reads see every committed write."""
        if lag_ok and self.replica is not None and await self._replica_may_serve(writes_of):
            conn = None
            try:
                conn = await self.replica.acquire(timeout=self._acquire_timeout)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.fallbacks["unavailable"] += 1
                log.warning("replica unavailable, reading from primary: %s", exc)
            if conn is not None:
                self.reads["replica"] += 1
                try:
                    yield conn
                except PG_UNAVAILABLE as exc:
                    raise StoreUnavailable("postgres") from exc
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
        return {**{f"reads_{pool}": n for pool, n in self.reads.items()},
                **{f"fallbacks_{reason}": n for reason, n in self.fallbacks.items()}}

    def replica_lag(self) -> dict[str, dict[str, float]] | None:
        """Per replica: seconds behind the primary (NaN: not measured yet), measurements
        done and failed (``None``: no replica)."""
        if self.monitor is None:
            return None
        lag = self.monitor.seconds()
        return {self.replica_name: {"seconds": float("nan") if lag is None else lag,
                                    "measured": self.monitor.measured, "failed": self.monitor.failures}}

    async def check_replica_lag(self) -> None:
        """Raises when lag-tolerant reads would not go to the replica (for /readyz)."""
        if self.monitor is not None and not self.monitor.caught_up():
            lag = self.monitor.seconds()
            raise RuntimeError("replica lag not measured" if lag is None else f"replica {lag * 1000:.0f} ms behind")

    def pool_stats(self) -> dict[str, int]:
        size = self.primary.get_size()
        return {"size": size, "idle": self.primary.get_idle_size(), "in_use": size - self.primary.get_idle_size(),
                "max": self.primary.get_max_size(), "in_use_peak": self.in_use_peak.value(), "exhausted": self.exhausted}
