"""Operations endpoints: liveness, readiness, metrics, the OpenAPI document."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from aiohttp import web

from api.http import json_response
from api.middleware import problem_response
from server import appkeys


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """503 naming the failing stores; an optional store (the read replica) that does not
    answer makes the status "degraded" but stays 200: the app serves without it."""
    required = request.app[appkeys.READINESS_CHECKS]
    optional = request.app[appkeys.OPTIONAL_READINESS_CHECKS]
    checks = {**required, **optional}
    timeout = request.app[appkeys.SETTINGS].readiness_timeout_seconds
    names = list(checks)
    results = await asyncio.gather(
        *(asyncio.wait_for(checks[name](), timeout) for name in names), return_exceptions=True
    )
    status = {name: ("ok" if not isinstance(res, BaseException) else "unavailable")
              for name, res in zip(names, results)}
    failing = [name for name in required if status[name] != "ok"]
    if failing:
        return problem_response(503, "Service Unavailable", "Not ready: " + ", ".join(failing) + " unavailable.",
                                instance=request.path, extra={"checks": status, "failing": failing})
    degraded = [name for name in optional if status[name] != "ok"]
    if degraded:
        return json_response({"status": "degraded", "checks": status, "degraded": degraded})
    return json_response({"status": "ready", "checks": status})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[appkeys.METRICS].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def add_ops_routes(app: web.Application, openapi_document: Callable[[], dict[str, Any]]) -> None:
    """``openapi_document``: the OpenAPI document of the app's endpoints (``api.routes``)."""
    async def openapi(request: web.Request) -> web.Response:
        return json_response(openapi_document())

    app.router.add_get("/healthz", healthz, name="ops.healthz")
    app.router.add_get("/readyz", readyz, name="ops.readyz")
    app.router.add_get("/metrics", metrics, name="ops.metrics")
    app.router.add_get("/openapi.json", openapi, name="ops.openapi")
