"""Migrations: ordered, recorded with checksums, idempotent, safe when run concurrently."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from storage.postgres.migrate import MigrationError, apply_migrations, load_migrations

async def test_migrations_apply_once_and_are_idempotent(make_pg_database):
    dsn = make_pg_database("_mig1")
    everything = [m.version for m in load_migrations()]
    assert await apply_migrations(dsn) == everything
    assert await apply_migrations(dsn) == []
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == everything
    assert [r["checksum"] for r in rows] == [m.checksum for m in load_migrations()]


async def test_concurrent_runners_apply_each_migration_exactly_once(make_pg_database):
    dsn = make_pg_database("_mig2")
    results = await asyncio.gather(*(apply_migrations(dsn) for _ in range(3)))
    applied = sorted(v for r in results for v in r)
    assert applied == [m.version for m in load_migrations()]


async def test_changed_migration_is_refused(make_pg_database, tmp_path):
    dsn = make_pg_database("_mig3")
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE t1 (id int);")
    assert await apply_migrations(dsn, tmp_path) == [1]
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE t1 (id bigint);")
    with pytest.raises(MigrationError, match="append-only"):
        await apply_migrations(dsn, tmp_path)


async def test_failed_migration_rolls_back_and_is_not_recorded(make_pg_database, tmp_path):
    dsn = make_pg_database("_mig4")
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok1 (id int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half (id int); SELECT no_such_function();")
    with pytest.raises(asyncpg.PostgresError):
        await apply_migrations(dsn, tmp_path)
    conn = await asyncpg.connect(dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        half = await conn.fetchval("SELECT to_regclass('half')")
    finally:
        await conn.close()
    assert versions == [1] and half is None


def test_badly_named_file_is_refused(tmp_path):
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError):
        load_migrations(tmp_path)
