"""The test suite's PostgreSQL clusters (``storage/embedded/pg_cluster.py``): one per module,
skipped where one cannot be made, and a database of the test's own on it."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest

from loadtest.namespaces import create_database
from storage.embedded.pg_cluster import PostgresCluster
from tests.helpers.waiting import run_sync


@contextmanager
def running_pg_cluster(*, replica: bool) -> Iterator[PostgresCluster]:
    """A cluster for a module (skipped where one cannot be made), destroyed afterwards."""
    reason = PostgresCluster.unavailable()
    if reason:
        pytest.skip(f"cannot create a PostgreSQL cluster of the test's own here: {reason}")
    cluster = PostgresCluster()
    try:
        yield cluster.create(replica=replica)
    finally:
        cluster.destroy()


def create_cluster_database(cluster: PostgresCluster, name: str) -> None:
    async def create() -> None:
        await create_database(cluster.dsn("primary"), name)
        if (cluster.datadir("replica") / "postmaster.pid").exists():
            await cluster.wait_replayed()

    run_sync(create())
