"""Health, readiness, metrics and the OpenAPI document."""
from __future__ import annotations

import pytest

from storage.embedded.processes import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_healthz(api):
    status, body, _ = await api.request("GET", "/healthz")
    assert status == 200 and body == {"status": "ok"}


async def test_readyz_when_every_store_answers(api):
    status, body, _ = await api.request("GET", "/readyz")
    assert status == 200, body
    assert body["checks"]["postgres"] == body["checks"]["mongo"] == body["checks"]["redis"] == "ok"


@pytest.mark.parametrize("store", ["mongo", "redis"])
async def test_readyz_503_names_the_unreachable_store(start_app, store):
    closed = free_port()
    override = {"mongo": {"mongo_url": f"mongodb://127.0.0.1:{closed}/?directConnection=true",
                          "mongo_timeout_ms": 300},
                "redis": {"redis_url": f"redis://127.0.0.1:{closed}/0"}}[store]
    async with start_app(**override) as api:
        status, body, resp = await api.request("GET", "/readyz")
        assert status == 503
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        assert body["failing"] == [store] and store in body["detail"]
        assert body["checks"]["postgres"] == "ok"
        # The parts that don't need that store keep working.
        status, _, _ = await api.request("GET", "/healthz")
        assert status == 200


async def test_metrics_has_latency_statuses_and_pool(api):
    await api.request("GET", "/healthz")
    await api.request("GET", "/users/me")  # a 401
    reader = await api.register("metrics")
    status, _, _ = await api.request("GET", "/notifications/unread-count", token=reader.token)
    assert status == 200
    status, text, resp = await api.request("GET", "/metrics")
    assert status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = text.decode()
    assert 'pulse_http_request_duration_seconds_bucket{le="0.005",method="GET",route="ops.healthz"}' in text
    assert 'pulse_http_responses_total{method="GET",route="users.me",status="401"}' in text
    assert "pulse_pg_pool_size" in text and "pulse_pg_pool_in_use" in text
    assert "pulse_pg_pool_in_use_peak" in text and "pulse_pg_pool_exhausted_total" in text
    assert "pulse_socketio_connections" in text
    # MongoDB data commands, timed by the driver: the unread count is a read.
    assert 'pulse_mongo_command_duration_seconds_count{command="aggregate",kind="read"}' in text


async def test_openapi_covers_every_route(api, server):
    status, doc, _ = await api.request("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    declared = set()
    for route in server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/v1") and route.method != "HEAD":
            declared.add((path, route.method.lower()))
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert declared and declared == documented
    register = doc["paths"]["/api/v1/auth/register"]["post"]
    schema_ref = register["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert set(schema["required"]) == {"email", "username", "password"}
    assert "201" in register["responses"] and "409" in register["responses"]
