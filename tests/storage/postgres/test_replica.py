"""A real streaming replica (pg_basebackup -R) behind the app: lag-tolerant reads go to
the replica (others' profiles, post lists) while it is within PULSE_PG_REPLICA_MAX_LAG_MS of
the primary and has replayed the reader's own latest write; otherwise, and while the
replica is down, they go to the primary (/readyz says "degraded", still 200).

Routing is proven by pausing WAL replay on the replica: a change committed on the primary
is then visible on the primary only, so which value a request returns shows where it read.
Changes made straight on the primary (not through the app) are nobody's "own write", so
only the lag decides where they are read.
"""
from __future__ import annotations

import math
import re
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from tests.helpers.api import Api
from tests.helpers.app import own_namespaces
from storage.embedded.pg_cluster import PostgresCluster
from tests.helpers.pg_cluster import create_cluster_database
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Lag limit for tests that pause replay to see where reads go: far above any pause here, so
# only the reader's own writes send them to the primary.
GENEROUS_MAX_LAG_MS = 600_000


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


async def scrape(api: Api) -> str:
    status, text, _ = await api.request("GET", "/metrics")
    assert status == 200
    return text.decode()


async def read_counts(api: Api) -> dict[str, float]:
    """Reads per pool, and lag-tolerant reads the primary served instead, by reason."""
    text = await scrape(api)
    counts = {pool: float(m.group(1)) for pool in ("primary", "replica")
              if (m := re.search(rf'^pulse_pg_reads_total{{pool="{pool}"}} (\S+)$', text, re.M))}
    for reason in ("unavailable", "lagging", "own_writes"):
        found = re.search(rf'^pulse_pg_replica_fallbacks_total{{reason="{reason}"}} (\S+)$', text, re.M)
        counts[reason] = float(found.group(1))
    counts["fallbacks"] = counts["unavailable"] + counts["lagging"] + counts["own_writes"]
    return counts


async def replica_lag(api: Api, cluster: PostgresCluster) -> float:
    """The app's exported lag of the cluster's replica, in seconds (NaN: not measured yet)."""
    text = await scrape(api)
    found = re.search(rf'^pulse_pg_replica_lag_seconds{{replica="127.0.0.1:{cluster.ports["replica"]}"}} (\S+)$',
                      text, re.M)
    assert found, "replica lag not exported"
    return float(found.group(1))


async def measurements(api: Api, cluster: PostgresCluster) -> float:
    found = re.search(rf'^pulse_pg_replica_lag_measurements_total{{outcome="ok",replica="127.0.0.1:'
                      rf'{cluster.ports["replica"]}"}} (\S+)$', await scrape(api), re.M)
    assert found, "replica lag measurements not exported"
    return float(found.group(1))


async def replica_in_use(api: Api, cluster: PostgresCluster) -> None:
    """Until the app has measured the replica caught up with everything written so far:
    replayed, then two more measurements (so one began after), lag 0, /readyz ready."""
    await cluster.wait_replayed()
    done = await measurements(api, cluster)

    async def caught_up() -> bool:
        if await measurements(api, cluster) < done + 2:
            return False
        status, body, _ = await api.request("GET", "/readyz")
        return status == 200 and body["status"] == "ready" and await replica_lag(api, cluster) == 0

    await eventually(caught_up)


async def reads_return_to_the_replica(api: Api, read) -> None:
    """Until a lag-tolerant read (``read()``) is served by the replica again."""
    async def served_by_replica() -> bool:
        before = await read_counts(api)
        await read()
        return (await read_counts(api))["replica"] > before["replica"]

    await eventually(served_by_replica)


@pytest.fixture(scope="module")
def cluster_app(pg_cluster, make_amqp_vhost, start_app):
    """Starts app instances on the cluster's database (primary + replica), sharing one
    namespace (so instances see each other's write marks): ``async with cluster_app() as
    api``; ``cluster_app.database`` names the database."""
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


async def rename_on_the_primary(cluster: PostgresCluster, database: str, user_id: str, name: str) -> None:
    """A profile change committed on the primary outside the app: nobody's own write."""
    conn = await asyncpg.connect(cluster.dsn("primary", database))
    try:
        await conn.execute("UPDATE profiles SET display_name = $2 WHERE user_id = $1", uuid.UUID(user_id), name)
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
    async with cluster_app(pg_replica_max_lag_ms=GENEROUS_MAX_LAG_MS) as api:
        alice = await api.register("rpa")
        bob = await api.register("rpb")
        dave = await api.register("rpd")
        await replica_in_use(api, pg_cluster)
        before = await read_counts(api)

        await set_replay_paused(pg_cluster, True)
        try:
            # Someone else's profile, changed on the primary by nobody reading here, on a
            # cache miss: the replica, which has not replayed the change (replay is paused).
            await rename_on_the_primary(pg_cluster, cluster_app.database, dave.id, "Dave Renamed")
            status, seen_by_bob, _ = await api.request("GET", f"/users/{dave.id}", token=bob.token)
            assert status == 200 and seen_by_bob["display_name"] == dave.user["display_name"]

            status, patched, _ = await api.request("PATCH", "/users/me", token=alice.token,
                                                   json={"display_name": "Alice Renamed"})
            assert status == 200 and patched["display_name"] == "Alice Renamed"
            # Read-your-own-writes: /users/me always from the primary; her public profile
            # and her post list too while the replica lacks her latest write.
            status, me, _ = await api.request("GET", "/users/me", token=alice.token)
            assert status == 200 and me["display_name"] == "Alice Renamed"
            status, own_public, _ = await api.request("GET", f"/users/{alice.id}", token=alice.token)
            assert status == 200 and own_public["display_name"] == "Alice Renamed"
            status, post, _ = await api.request("POST", "/posts", token=alice.token, json={"body": "fresh"})
            assert status == 201
            status, listed, _ = await api.request("GET", f"/users/{alice.id}/posts", token=alice.token)
            assert status == 200 and post["id"] in [p["id"] for p in listed["items"]]
            # Bob sees her change too: a read of her profile skips the replica while it lacks
            # her latest write, so no stale row ever fills the shared profile cache.
            status, seen_by_bob, _ = await api.request("GET", f"/users/{alice.id}", token=bob.token)
            assert status == 200 and seen_by_bob["display_name"] == "Alice Renamed"
        finally:
            await set_replay_paused(pg_cluster, False)

        after = await read_counts(api)
        assert after["replica"] > before["replica"]
        assert after["own_writes"] > before["own_writes"]
        assert after["unavailable"] == before["unavailable"] and after["lagging"] == before["lagging"]
        await replica_in_use(api, pg_cluster)
        replica = await asyncpg.connect(pg_cluster.dsn("replica", cluster_app.database))
        try:
            names = dict(await replica.fetch("SELECT user_id::text, display_name FROM profiles WHERE user_id = ANY($1)",
                                             [uuid.UUID(alice.id), uuid.UUID(dave.id)]))
        finally:
            await replica.close()
        # The replica catches up once replay resumes.
        assert names == {alice.id: "Alice Renamed", dave.id: "Dave Renamed"}
        before = await read_counts(api)
        status, listed, _ = await api.request("GET", f"/users/{alice.id}/posts", token=bob.token)
        assert status == 200 and post["id"] in [p["id"] for p in listed["items"]]
        after = await read_counts(api)
        assert after["replica"] > before["replica"]  # replayed: Alice's write no longer binds
        assert after["own_writes"] == before["own_writes"]


async def test_a_lagging_replica_is_left_until_it_catches_up(pg_cluster, cluster_app):
    """Default limit (100 ms): paused replay plus a write on the primary make the replica
    lag; lag-tolerant reads then go to the primary (and see the write), /readyz and
    /metrics show it, and reads return to the replica once replay resumes."""
    async with cluster_app() as api:
        bob = await api.register("lgb")
        dave = await api.register("lgd")
        await replica_in_use(api, pg_cluster)
        assert await replica_lag(api, pg_cluster) == 0

        await set_replay_paused(pg_cluster, True)
        try:
            await rename_on_the_primary(pg_cluster, cluster_app.database, dave.id, "Dave Lagging")

            async def lagging() -> bool:
                return await replica_lag(api, pg_cluster) > 0.1

            await eventually(lagging)
            status, body, _ = await api.request("GET", "/readyz")
            assert status == 200 and body["status"] == "degraded", body
            assert body["degraded"] == ["postgres_replica_lag"]
            assert body["checks"]["postgres_replica"] == "ok"

            before = await read_counts(api)
            status, seen_by_bob, _ = await api.request("GET", f"/users/{dave.id}", token=bob.token)
            assert status == 200 and seen_by_bob["display_name"] == "Dave Lagging"  # the primary's row
            after = await read_counts(api)
            assert after["replica"] == before["replica"]
            assert after["primary"] > before["primary"] and after["lagging"] > before["lagging"]
            assert await replica_lag(api, pg_cluster) > 0.1  # still growing while paused
        finally:
            await set_replay_paused(pg_cluster, False)

        await replica_in_use(api, pg_cluster)

        async def dave_s_posts() -> None:
            status, listed, _ = await api.request("GET", f"/users/{dave.id}/posts", token=bob.token)
            assert status == 200 and listed["items"] == []

        await reads_return_to_the_replica(api, dave_s_posts)


async def test_own_writes_are_read_back_through_another_instance(pg_cluster, cluster_app):
    """Alice writes through one instance and reads through another while the replica has
    not replayed her writes: her profile, her post and her RSVP come back (the write mark
    is shared in Redis); Bob's lag-tolerant reads still come from the replica."""
    async with cluster_app(pg_replica_max_lag_ms=GENEROUS_MAX_LAG_MS) as first, \
            cluster_app(pg_replica_max_lag_ms=GENEROUS_MAX_LAG_MS) as second:
        alice = await first.register("rwa")
        bob = await first.register("rwb")
        starts = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()
        status, event, _ = await first.request("POST", "/events", token=bob.token,
                                               json={"title": "Replica party", "starts_at": starts})
        assert status == 201, event
        await replica_in_use(first, pg_cluster)
        await replica_in_use(second, pg_cluster)
        before = await read_counts(second)

        await set_replay_paused(pg_cluster, True)
        try:
            status, _, _ = await first.request("PATCH", "/users/me", token=alice.token, json={"bio": "written on one"})
            assert status == 200
            status, post, _ = await first.request("POST", "/posts", token=alice.token, json={"body": "mine"})
            assert status == 201
            status, rsvp, _ = await first.request("PUT", f"/events/{event['id']}/rsvp", token=alice.token,
                                                  json={"status": "going"})
            assert status == 200 and rsvp["going_count"] == 1

            status, profile, _ = await second.request("GET", f"/users/{alice.id}", token=alice.token)
            assert status == 200 and profile["bio"] == "written on one"
            status, listed, _ = await second.request("GET", f"/users/{alice.id}/posts", token=alice.token)
            assert status == 200 and [p["id"] for p in listed["items"]] == [post["id"]]
            status, events, _ = await second.request("GET", "/events", token=alice.token)
            assert status == 200
            mine = next(e for e in events["items"] if e["id"] == event["id"])
            assert mine["my_rsvp"] == "going" and mine["going_count"] == 1
            status, attendees, _ = await second.request("GET", f"/events/{event['id']}/attendees",
                                                        token=alice.token)
            assert status == 200 and [a["user"]["id"] for a in attendees["items"]] == [alice.id]

            # Bob wrote nothing since the replica caught up: his list comes from the replica,
            # which has not replayed Alice's RSVP.
            status, events, _ = await second.request("GET", "/events", token=bob.token)
            assert status == 200
            theirs = next(e for e in events["items"] if e["id"] == event["id"])
            assert theirs["going_count"] == 0 and theirs["my_rsvp"] is None
        finally:
            await set_replay_paused(pg_cluster, False)
        after = await read_counts(second)
        assert after["own_writes"] > before["own_writes"] and after["replica"] > before["replica"]


async def test_replica_down_reads_fall_back_to_the_primary_and_readyz_is_degraded(pg_cluster, cluster_app):
    async with cluster_app(pg_replica_max_lag_ms=GENEROUS_MAX_LAG_MS) as api:
        alice = await api.register("rda")
        bob = await api.register("rdb")
        await replica_in_use(api, pg_cluster)
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

            # A replica that cannot be measured counts as lagging, whatever the limit.
            async def lag_unknown() -> bool:
                status, body, _ = await api.request("GET", "/readyz")
                return status == 200 and body.get("degraded") == ["postgres_replica", "postgres_replica_lag"]

            body = await eventually(lag_unknown)
            status, body, _ = await api.request("GET", "/readyz")
            assert status == 200, body
            assert body["checks"]["postgres"] == "ok" and body["checks"]["postgres_replica"] == "unavailable"
            lag = await replica_lag(api, pg_cluster)
            assert math.isnan(lag) or lag > 0
        finally:
            pg_cluster.start("replica")

        await replica_in_use(api, pg_cluster)
        carol = await api.register("rdc")
        await replica_in_use(api, pg_cluster)

        async def carol_s_posts() -> None:
            status, listed, _ = await api.request("GET", f"/users/{carol.id}/posts", token=bob.token)
            assert status == 200 and listed["items"] == []

        await reads_return_to_the_replica(api, carol_s_posts)  # back on the replica, no restart
