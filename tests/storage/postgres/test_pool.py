"""The pools: what a released connection keeps and loses (the reset on release is cheap,
so it must still leave the next user a clean connection)."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from storage.postgres.pool import Database, RecentPeak

pytestmark = pytest.mark.asyncio(loop_scope="session")

LOCK_KEY = 424242


async def _only_connection(settings) -> Database:
    # One connection, so the next acquire gets the very connection released before.
    return await Database.connect(settings.replace(pg_pool_min=1, pg_pool_max=1))


async def _advisory_locks_held(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1", LOCK_KEY)
    finally:
        await conn.close()


async def test_a_transaction_left_by_an_error_is_rolled_back_on_release(settings):
    db = await _only_connection(settings)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with db.transaction() as conn:
                await conn.execute("CREATE TEMP TABLE pool_probe (n int)")
                await conn.fetchval("SELECT 1 / 0")
        async with db.connection() as conn:
            assert not conn.is_in_transaction()
            # The failed transaction's table went with it.
            assert await conn.fetchval("SELECT to_regclass('pg_temp.pool_probe')") is None
    finally:
        await db.close()


async def test_a_session_releases_its_advisory_lock(settings):
    db = await _only_connection(settings)
    try:
        async with db.session() as conn:
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
            assert await _advisory_locks_held(settings.postgres_dsn) == 1
        # Left locked on purpose: the session's reset unlocks it.
        assert await _advisory_locks_held(settings.postgres_dsn) == 0
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1  # the pool still serves
    finally:
        await db.close()


async def test_a_session_left_by_an_error_still_releases_its_lock(settings):
    db = await _only_connection(settings)
    try:
        with pytest.raises(RuntimeError):
            async with db.session() as conn:
                await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
                raise RuntimeError("the holder failed")
        assert await _advisory_locks_held(settings.postgres_dsn) == 0
    finally:
        await db.close()


async def test_pool_stats_keep_the_peak_and_count_waits_for_a_busy_pool(settings):
    db = await Database.connect(settings.replace(pg_pool_min=2, pg_pool_max=2))
    try:
        assert db.pool_stats()["in_use_peak"] == 0 and db.pool_stats()["exhausted"] == 0
        release = asyncio.Event()
        holding = 0

        async def hold() -> None:
            nonlocal holding
            async with db.connection():
                holding += 1
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        while holding < 2:
            await asyncio.sleep(0.01)
        waiter = asyncio.create_task(hold())  # finds both connections busy
        await asyncio.sleep(0.05)
        assert not waiter.done()
        release.set()
        await asyncio.gather(*holders, waiter)
        stats = db.pool_stats()
        assert stats["in_use"] == 0  # a sample taken now would show no pressure at all
        assert stats["in_use_peak"] == 2 and stats["exhausted"] == 1
    finally:
        await db.close()


async def test_recent_peak_forgets_bursts_older_than_its_window():
    now = [100.0]
    peak = RecentPeak(10, clock=lambda: now[0])
    assert peak.value() == 0
    peak.record(3)
    peak.record(7)
    peak.record(2)
    now[0] = 104.5
    peak.record(4)
    assert peak.value() == 7
    now[0] = 110.2  # the second of the 7 has left the window; the 4 has not
    assert peak.value() == 4
    now[0] = 120.0
    peak.record(1)
    assert peak.value() == 1
