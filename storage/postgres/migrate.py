"""Migrations: ordered SQL files ``migrations/NNNN_description.sql``, applied in order,
each in its own transaction, under a PostgreSQL advisory lock (so several instances
starting at once apply each file exactly once), recorded with a checksum. A recorded
file whose content changed is an error: migrations are append-only.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger("pulse.migrate")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Arbitrary constant that names "the Pulse migration lock" among advisory locks.
ADVISORY_LOCK_KEY = 0x70756C7365  # "pulse"
_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if not match:
            raise MigrationError(f"migration file name not of the form NNNN_description.sql: {path.name}")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"two migration files share a number: {versions}")
    return found


async def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations; returns the versions applied by this call."""
    migrations = load_migrations(directory)
    # A dedicated connection without the app's statement timeout: migrations may be slow.
    conn = await asyncpg.connect(dsn=dsn, timeout=10)
    applied_now: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
            recorded = {r["version"]: r for r in rows}
            for migration in migrations:
                done = recorded.get(migration.version)
                if done is not None:
                    if done["checksum"] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed after it was "
                            "applied; migrations are append-only: add a new file instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version, migration.name, migration.checksum,
                    )
                log.info("applied migration %04d_%s", migration.version, migration.name)
                applied_now.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()
    return applied_now
