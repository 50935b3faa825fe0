"""How far the read replica is behind the primary, measured without comparing clocks.

Every ``interval`` the monitor reads the primary's WAL position (``pg_current_wal_lsn()``)
and the replica's replayed position (``pg_last_wal_replay_lsn()``), both on this instance's
monotonic clock. The lag is the age of the oldest primary sample the replica has not
replayed yet (0 when it has replayed them all). A replica that does not answer confirms
nothing, so its lag keeps growing; a primary that does not answer stops the samples, so the
measurement itself grows old — either way the replica counts as lagging.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable

import asyncpg

from kernel.tasks import cancel_and_wait

log = logging.getLogger("pulse.postgres.replica")

# Past this many unreplayed samples (a replica stuck for minutes), new positions replace the
# newest sample's instead of adding one: the lag can only be overstated, never understated.
MAX_PENDING_SAMPLES = 4096

PRIMARY_POSITION = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
# NULL on a server that is not a standby: then there is nothing it could have replayed.
REPLICA_POSITION = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"


class ReplicaLag:
    """The lag arithmetic: primary samples (time, position) waiting for the replica."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: deque[tuple[float, int]] = deque()
        # When the replica last reported its position, and that position.
        self.measured_at: float | None = None
        self.replayed: int | None = None

    def primary_at(self, when: float, position: int) -> None:
        """The primary's position read at or after ``when`` (so every commit before
        ``when`` is at or below it)."""
        if self._pending and self._pending[-1][1] >= position:
            return  # nothing new: the oldest time for this position is already kept
        if len(self._pending) >= MAX_PENDING_SAMPLES:
            self._pending[-1] = (self._pending[-1][0], position)
            return
        self._pending.append((when, position))

    def replica_replayed(self, position: int) -> None:
        while self._pending and self._pending[0][1] <= position:
            self._pending.popleft()
        self.measured_at = self._clock()
        self.replayed = position if self.replayed is None else max(self.replayed, position)

    def seconds(self) -> float | None:
        """Seconds behind the primary; ``None`` before the first measurement."""
        if self.measured_at is None:
            return None
        return self._clock() - self._pending[0][0] if self._pending else 0.0

    def measurement_age(self) -> float | None:
        return None if self.measured_at is None else self._clock() - self.measured_at


class ReplicaLagMonitor:
    """Samples both servers on dedicated connections (not the pools: the monitor must not
    take a connection a request needs, nor show up in pool utilisation)."""

    def __init__(self, primary_dsn: str, replica_dsn: str, *, interval: float, stale_after: float,
                 max_lag: float, connect_timeout: float) -> None:
        self._dsns = {"primary": primary_dsn, "replica": replica_dsn}
        self._interval = interval
        self._stale_after = stale_after
        self.max_lag = max_lag
        self._connect_timeout = connect_timeout
        self._conns: dict[str, asyncpg.Connection] = {}
        self.lag = ReplicaLag()
        self.measured = 0
        self.failures = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-replica-lag")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await asyncio.gather(*(c.close(timeout=1) for c in self._conns.values()), return_exceptions=True)
        self._conns.clear()

    def seconds(self) -> float | None:
        """The lag, growing while the measurement is failing."""
        lag = self.lag.seconds()
        age = self.lag.measurement_age()
        if lag is None or age is None:
            return None
        return max(lag, age) if age > self._stale_after else lag

    def caught_up(self) -> bool:
        """True when lag-tolerant reads may go to the replica: measured lately, and no
        further behind than the limit."""
        lag = self.seconds()
        return lag is not None and lag <= self.max_lag and self.lag.measurement_age() <= self._stale_after

    async def _position(self, node: str, query: str) -> int | None:
        conn = self._conns.get(node)
        if conn is None or conn.is_closed():
            conn = await asyncpg.connect(self._dsns[node], timeout=self._connect_timeout,
                                         server_settings={"application_name": "pulse:replica-lag"})
            self._conns[node] = conn
        try:
            return await conn.fetchval(query, timeout=self._stale_after)
        except BaseException:
            self._conns.pop(node, None)
            conn.terminate()
            raise

    async def sample(self) -> None:
        """One measurement: the primary's position, then the replica's."""
        started = time.monotonic()
        position = await self._position("primary", PRIMARY_POSITION)
        self.lag.primary_at(started, position)
        replayed = await self._position("replica", REPLICA_POSITION)
        if replayed is None:
            raise RuntimeError("the replica is not a standby (pg_last_wal_replay_lsn() is NULL)")
        self.lag.replica_replayed(replayed)

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
                self.measured += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a server down must not end the monitor
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("replica lag not measured (%d failures so far): %s", self.failures, exc)
            await asyncio.sleep(self._interval)
