"""Embedded stores: each one really answers, data survives a restart, stop() leaves nothing running.

The launcher is synchronous (it runs before the server's event loop); the async tests
call it through ``asyncio.to_thread`` so the test loop is never blocked.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from storage.embedded import EmbeddedStores, EmbeddedStoresError, start_embedded_stores


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory):
    with start_embedded_stores(tmp_path_factory.mktemp("pulse-data")) as running:
        yield running


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])


def _has_exited(process: psutil.Process) -> bool:
    """The daemonised postmaster is reaped by init, maybe later: a zombie has exited too."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_postgres_dsn_opens_an_asyncpg_pool_on_the_pulse_database(stores: EmbeddedStores):
    pool = await asyncpg.create_pool(dsn=stores.postgres_dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_database()") == "pulse"
            await conn.execute("CREATE TEMP TABLE probe (id int PRIMARY KEY, note text)")
            await conn.execute("INSERT INTO probe VALUES ($1, $2)", 7, "seven")
            assert await conn.fetchval("SELECT note FROM probe WHERE id = $1", 7) == "seven"
    finally:
        await pool.close()


async def test_mongo_url_serves_the_async_client(stores: EmbeddedStores):
    client: AsyncMongoClient = AsyncMongoClient(stores.mongo_url, serverSelectionTimeoutMS=5000)
    try:
        collection = client["pulse_embedded_test"]["probe"]
        inserted = await collection.insert_one({"kind": "probe", "n": 1})
        found = await collection.find_one({"_id": inserted.inserted_id})
        assert found is not None and found["n"] == 1
    finally:
        await client.close()


async def test_redis_url_serves_the_asyncio_client(stores: EmbeddedStores):
    client = aioredis.from_url(stores.redis_url)
    try:
        assert await client.set("pulse:embedded:probe", "value", ex=60)
        assert await client.get("pulse:embedded:probe") == b"value"
    finally:
        await client.aclose()


def test_stores_listen_only_on_loopback_and_keep_data_under_the_data_dir(stores: EmbeddedStores):
    assert stores.mongo_url.startswith("mongodb://127.0.0.1:")
    assert stores.redis_url.startswith("redis://127.0.0.1:")
    assert f"host={stores.data_dir / 'pg'}" in stores.postgres_dsn
    for part in ("pg/PG_VERSION", "mongo/WiredTiger", "logs/mongo.log", "logs/redis.log"):
        assert (stores.data_dir / part).exists(), part


def test_a_second_start_on_a_running_data_dir_is_refused(stores: EmbeddedStores):
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(EmbeddedStoresError, match="another process"):
        start_embedded_stores(stores.data_dir)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children_before
    # The running stores are untouched.
    assert psutil.pid_exists(_postmaster_pid(stores.data_dir))


async def _write_everything(stores: EmbeddedStores) -> None:
    conn = await asyncpg.connect(dsn=stores.postgres_dsn)
    try:
        await conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text NOT NULL)")
        await conn.execute("INSERT INTO kept VALUES ($1, $2)", 1, "from the first run")
    finally:
        await conn.close()
    mongo: AsyncMongoClient = AsyncMongoClient(stores.mongo_url)
    try:
        await mongo["pulse"]["kept"].insert_one({"_id": "k1", "note": "from the first run"})
    finally:
        await mongo.close()
    cache = aioredis.from_url(stores.redis_url)
    try:
        await cache.set("pulse:kept", "from the first run")
    finally:
        await cache.aclose()


async def _read_everything(stores: EmbeddedStores) -> tuple[object, object, object]:
    conn = await asyncpg.connect(dsn=stores.postgres_dsn)
    try:
        pg_note = await conn.fetchval("SELECT note FROM kept WHERE id = $1", 1)
    finally:
        await conn.close()
    mongo: AsyncMongoClient = AsyncMongoClient(stores.mongo_url)
    try:
        document = await mongo["pulse"]["kept"].find_one({"_id": "k1"})
    finally:
        await mongo.close()
    cache = aioredis.from_url(stores.redis_url)
    try:
        redis_note = await cache.get("pulse:kept")
    finally:
        await cache.aclose()
    return pg_note, document and document["note"], redis_note


async def test_data_survives_a_restart_and_stop_leaves_no_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    data_dir = tmp_path / "pulse-data"
    caplog.set_level(logging.INFO, logger="pulse.embedded")
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}

    first = await asyncio.to_thread(start_embedded_stores, data_dir)
    try:
        started = [p for p in psutil.Process().children(recursive=True) if p.pid not in children_before]
        postmaster = psutil.Process(_postmaster_pid(data_dir))
        assert len(started) >= 2  # SecantusDB and redis-server (PostgreSQL is daemonised)
        await _write_everything(first)
    finally:
        await asyncio.to_thread(first.stop)

    for process in [*started, postmaster]:
        assert _has_exited(process), process
    await asyncio.to_thread(first.stop)  # idempotent

    messages = caplog.text
    for store in ("PostgreSQL", "MongoDB", "Redis"):
        assert f"embedded {store}" in messages
    assert str(data_dir) in messages

    second = await asyncio.to_thread(start_embedded_stores, data_dir)
    try:
        postmaster = psutil.Process(_postmaster_pid(data_dir))
        assert await _read_everything(second) == (
            "from the first run", "from the first run", b"from the first run",
        )
    finally:
        await asyncio.to_thread(second.stop)
    assert _has_exited(postmaster)


async def test_a_store_that_cannot_start_is_named_and_nothing_is_left_running(tmp_path: Path):
    data_dir = tmp_path / "pulse-data"
    (data_dir / "mongo").mkdir(parents=True)
    # A WiredTiger home whose metadata is garbage: SecantusDB refuses to open it.
    (data_dir / "mongo" / "WiredTiger").write_text("WiredTiger\n")
    (data_dir / "mongo" / "WiredTiger.turtle").write_text("garbage\n")
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}

    with pytest.raises(EmbeddedStoresError, match=r"MongoDB \(SecantusDB\) exited") as failure:
        await asyncio.to_thread(start_embedded_stores, data_dir)

    assert str(data_dir / "logs" / "mongo.log") in str(failure.value)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children_before
    assert not (data_dir / "pg" / "postmaster.pid").exists()  # PostgreSQL was stopped again
    assert not list((data_dir / "run").glob("*.pid"))
