"""A real streaming replica (pg_basebackup -R) behind the app: lag-tolerant reads go to
the replica (others' profiles, post lists), read-your-own-writes reads go to the primary,
and the app keeps serving from the primary while the replica is down (/readyz says
"degraded", still 200).

Routing is proven by pausing WAL replay on the replica: a change committed on the primary
is then visible on the primary only, so which value a request returns shows where it read.
"""
from __future__ import annotations

import re
import uuid

import asyncpg
import pytest

from tests.conftest import Api, PostgresCluster, create_cluster_database, own_namespaces

pytestmark = pytest.mark.asyncio(loop_scope="session")


def cluster_overrides(cluster: PostgresCluster, make_amqp_vhost) -> tuple[dict, str]:
    """Settings for an app on a fresh database of the cluster (primary + replica)."""
    database = f"pulse_cluster_{uuid.uuid4().hex[:6]}"
    create_cluster_database(cluster, database)
    return dict(
        own_namespaces(make_amqp_vhost, "replica"),
        postgres_dsn=cluster.dsn("primary", database),
        postgres_replica_dsn=cluster.dsn("replica", database),
        pg_connect_timeout_seconds=1.0,
        pg_acquire_timeout_seconds=1.0,
    ), database


async def read_counts(api: Api) -> dict[str, float]:
    status, text, _ = await api.request("GET", "/metrics")
    assert status == 200
    text = text.decode()
    counts = {pool: float(m.group(1)) for pool in ("primary", "replica")
              if (m := re.search(rf'^pulse_pg_reads_total{{pool="{pool}"}} (\S+)$', text, re.M))}
    fallbacks = re.search(r"^pulse_pg_replica_fallbacks_total (\S+)$", text, re.M)
    counts["fallbacks"] = float(fallbacks.group(1))
    return counts


@pytest.fixture(scope="module")
def cluster_app(pg_cluster, make_amqp_vhost, start_app):
    """Starts app instances on the cluster's database (primary + replica): ``async with
    cluster_app() as api``; ``cluster_app.database`` names the database."""
    overrides, database = cluster_overrides(pg_cluster, make_amqp_vhost)

    def start(**more):
        return start_app(**{**overrides, **more})

    start.database = database
    return start


async def set_replay_paused(cluster: PostgresCluster, paused: bool) -> None:
    conn = await asyncpg.connect(cluster.dsn("replica"))
    try:
        await conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")
    finally:
        await conn.close()


async def test_the_replica_is_a_read_only_streaming_standby(pg_cluster):
    conn = await asyncpg.connect(pg_cluster.dsn("replica"))
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("CREATE TABLE written_on_the_replica (x int)")
    finally:
        await conn.close()
    conn = await asyncpg.connect(pg_cluster.dsn("primary"))
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == 1
    finally:
        await conn.close()


async def test_lag_tolerant_reads_use_the_replica_and_own_reads_the_primary(pg_cluster, cluster_app):
    async with cluster_app() as api:
        alice = await api.register("rpa")
        bob = await api.register("rpb")
        await pg_cluster.wait_replayed()
        before = await read_counts(api)

        await set_replay_paused(pg_cluster, True)
        try:
            status, patched, _ = await api.request("PATCH", "/users/me", token=alice.token,
                                                   json={"display_name": "Alice Renamed"})
            assert status == 200 and patched["display_name"] == "Alice Renamed"
            # Read-your-own-writes: the primary, so the change is there at once.
            status, me, _ = await api.request("GET", "/users/me", token=alice.token)
            assert status == 200 and me["display_name"] == "Alice Renamed"
            # Someone else's profile on a cache miss: the replica, which has not replayed the
            # change yet (replay is paused) — the old name proves where it was read.
            status, seen_by_bob, _ = await api.request("GET", f"/users/{alice.id}", token=bob.token)
            assert status == 200 and seen_by_bob["display_name"] == alice.user["display_name"]
            # Post lists too: the post is committed on the primary, not yet in the list.
            status, post, _ = await api.request("POST", "/posts", token=alice.token, json={"body": "fresh"})
            assert status == 201
            status, listed, _ = await api.request("GET", f"/users/{alice.id}/posts", token=bob.token)
            assert status == 200 and post["id"] not in [p["id"] for p in listed["items"]]
        finally:
            await set_replay_paused(pg_cluster, False)

        after = await read_counts(api)
        assert after["replica"] > before["replica"]
        assert after["fallbacks"] == before["fallbacks"]
        await pg_cluster.wait_replayed()
        replica = await asyncpg.connect(pg_cluster.dsn("replica", cluster_app.database))
        try:
            name = await replica.fetchval("SELECT display_name FROM profiles WHERE user_id = $1",
                                          uuid.UUID(alice.id))
        finally:
            await replica.close()
        assert name == "Alice Renamed"  # the replica catches up once replay resumes
        status, listed, _ = await api.request("GET", f"/users/{alice.id}/posts", token=bob.token)
        assert status == 200 and post["id"] in [p["id"] for p in listed["items"]]


async def test_replica_down_reads_fall_back_to_the_primary_and_readyz_is_degraded(pg_cluster, cluster_app):
    async with cluster_app() as api:
        alice = await api.register("rda")
        bob = await api.register("rdb")
        status, body, _ = await api.request("GET", "/readyz")
        assert status == 200 and body["status"] == "ready" and body["checks"]["postgres_replica"] == "ok"

        pg_cluster.stop("replica")
        try:
            before = await read_counts(api)
            status, profile, _ = await api.request("GET", f"/users/{alice.id}", token=bob.token)
            assert status == 200 and profile["username"] == alice.username
            status, _, _ = await api.request("PATCH", "/users/me", token=bob.token, json={"bio": "still here"})
            assert status == 200
            status, me, _ = await api.request("GET", "/users/me", token=bob.token)
            assert status == 200 and me["bio"] == "still here"
            after = await read_counts(api)
            assert after["fallbacks"] > before["fallbacks"]
            assert after["replica"] == before["replica"]

            status, body, _ = await api.request("GET", "/readyz")
            assert status == 200, body
            assert body["status"] == "degraded" and body["degraded"] == ["postgres_replica"]
            assert body["checks"]["postgres"] == "ok" and body["checks"]["postgres_replica"] == "unavailable"
        finally:
            pg_cluster.start("replica")

        await pg_cluster.wait_replayed()
        status, body, _ = await api.request("GET", "/readyz")
        assert status == 200 and body["status"] == "ready"
        carol = await api.register("rdc")
        await pg_cluster.wait_replayed()
        before = await read_counts(api)
        status, profile, _ = await api.request("GET", f"/users/{carol.id}", token=bob.token)
        assert status == 200 and profile["username"] == carol.username
        after = await read_counts(api)
        assert after["replica"] == before["replica"] + 1  # back on the replica, no restart
