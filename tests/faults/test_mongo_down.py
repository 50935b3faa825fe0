"""MongoDB down (a SecantusDB of the test's own, stopped): /readyz names "mongo", the REST
API that does not need MongoDB is unaffected, and recovery is automatic."""
from __future__ import annotations

import asyncio

import pytest

from tests.helpers.app import own_namespaces
from tests.helpers.faults import within_deadline
from tests.helpers.stores import SecantusServer

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def ready_again(api, attempts: int = 40):
    for _ in range(attempts):
        status, body, _ = await within_deadline(api.request("GET", "/readyz"))
        if status == 200:
            return status, body
        await asyncio.sleep(0.5)
    return status, body


async def test_mongo_down_only_mongo_is_reported_and_the_rest_works(make_amqp_vhost, start_app):
    mongo = SecantusServer().start()
    try:
        async with start_app(**own_namespaces(make_amqp_vhost, "mongodown"), mongo_url=mongo.url,
                             mongo_timeout_ms=500) as api:
            alice = await api.register("mda")
            status, body, _ = await api.request("GET", "/readyz")
            assert status == 200, body

            mongo.stop()
            status, body, resp = await within_deadline(api.request("GET", "/readyz"))
            assert status == 503 and resp.headers["Content-Type"].startswith("application/problem+json")
            assert body["failing"] == ["mongo"] and "mongo" in body["detail"]
            assert body["checks"]["postgres"] == "ok" and body["checks"]["redis"] == "ok"
            # Accounts and profiles live in PostgreSQL and Redis: unaffected.
            bob = await within_deadline(api.register("mdb"))
            status, me, _ = await within_deadline(api.request("PATCH", "/users/me", token=alice.token,
                                                              json={"bio": "mongo is down"}))
            assert status == 200 and me["bio"] == "mongo is down"
            status, seen, _ = await within_deadline(api.request("GET", f"/users/{alice.id}", token=bob.token))
            assert status == 200 and seen["bio"] == "mongo is down"
            status, body, _ = await within_deadline(api.request(
                "POST", "/auth/login", json={"login": bob.username, "password": bob.password}))
            assert status == 200, body

            mongo.start()  # back on the same port: the client finds it again by itself
            # Polled as an orchestrator would: the driver's monitor rediscovers the server.
            status, body = await ready_again(api)
            assert status == 200, body
    finally:
        mongo.stop()
