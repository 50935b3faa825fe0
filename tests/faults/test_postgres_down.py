"""PostgreSQL down (a cluster of the test's own, stopped): requests answer 503
problem+json naming "postgres" quickly, /readyz names it, and the app recovers by itself
when the server is back (the asyncpg pool reconnects)."""
from __future__ import annotations

import uuid

import pytest

from tests.helpers.app import own_namespaces
from tests.helpers.faults import assert_store_problem, within_deadline
from tests.helpers.pg_cluster import create_cluster_database, running_pg_cluster

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def primary_only():
    with running_pg_cluster(replica=False) as cluster:
        yield cluster


@pytest.fixture
def app_on_cluster(primary_only, make_amqp_vhost, start_app):
    database = f"pulse_down_{uuid.uuid4().hex[:6]}"
    create_cluster_database(primary_only, database)
    return start_app(**own_namespaces(make_amqp_vhost, "pgdown"), postgres_dsn=primary_only.dsn("primary", database),
                     pg_connect_timeout_seconds=1.0, pg_acquire_timeout_seconds=1.0,
                     # No in-process near-cache: the reads below must reach PostgreSQL (with
                     # one, a cached /users/me is answered while PostgreSQL is down, by design).
                     near_cache_entries=0)


async def test_postgres_down_gives_quick_503s_and_recovery_is_automatic(primary_only, app_on_cluster):
    async with app_on_cluster as api:
        alice = await api.register("pgd")
        status, _, _ = await api.request("GET", "/users/me", token=alice.token)
        assert status == 200

        primary_only.stop("primary")
        try:
            # Token still cached in Redis, the user row is not: the read needs PostgreSQL.
            assert_store_problem(*await within_deadline(api.request("GET", "/users/me", token=alice.token)),
                                 "postgres")
            assert_store_problem(*await within_deadline(api.request(
                "PATCH", "/users/me", token=alice.token, json={"bio": "lost?"})), "postgres")
            assert_store_problem(*await within_deadline(api.request(
                "POST", "/auth/register", json={"email": "pgdown@example.com", "username": "pgdown_x",
                                                "password": "correct horse battery"})), "postgres")
            status, body, resp = await within_deadline(api.request("GET", "/readyz"))
            assert status == 503 and resp.headers["Content-Type"].startswith("application/problem+json")
            assert body["failing"] == ["postgres"] and "postgres" in body["detail"]
            assert body["checks"]["redis"] == "ok"
            status, _, _ = await within_deadline(api.request("GET", "/healthz"))
            assert status == 200  # the process itself is alive: no restart wanted
        finally:
            primary_only.start("primary")

        # Back without restarting the app: the pool opens new connections.
        status, body, _ = await within_deadline(api.request("GET", "/readyz"))
        assert status == 200, body
        status, me, _ = await within_deadline(api.request("GET", "/users/me", token=alice.token))
        assert status == 200 and me["bio"] == ""  # the refused PATCH stored nothing
        status, me, _ = await within_deadline(api.request("PATCH", "/users/me", token=alice.token,
                                                          json={"bio": "back"}))
        assert status == 200 and me["bio"] == "back"
        status, _, _ = await within_deadline(api.request(
            "POST", "/auth/register", json={"email": "pgdown@example.com", "username": "pgdown_x",
                                            "password": "correct horse battery"}))
        assert status == 201  # the refused registration left nothing behind (no 409)


async def test_postgres_killed_mid_flight_recovers_too(primary_only, app_on_cluster):
    """An immediate stop (no clean shutdown, as after a crash) followed by crash recovery."""
    async with app_on_cluster as api:
        alice = await api.register("pgk")
        primary_only.stop("primary", mode="immediate")
        try:
            assert_store_problem(*await within_deadline(api.request("GET", "/users/me", token=alice.token)),
                                 "postgres")
        finally:
            primary_only.start("primary")
        status, me, _ = await within_deadline(api.request("GET", "/users/me", token=alice.token))
        assert status == 200 and me["id"] == alice.id
