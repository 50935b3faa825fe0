"""The one place errors become application/problem+json, and requests become metrics."""
from __future__ import annotations

import logging
import time

import orjson
from aiohttp import web

from server import appkeys
from server.errors import DomainError, Overloaded, RateLimited, ValidationFailed
from storage.errors import as_unavailable

log = logging.getLogger("pulse.api")

_HTTP_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
    500: "Internal Server Error", 503: "Service Unavailable",
}


def problem_response(
    status: int, title: str, detail: str, *, type_: str | None = None, instance: str | None = None,
    extra: dict | None = None, headers: dict[str, str] | None = None,
) -> web.Response:
    body = {
        "type": type_ or "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if extra:
        body.update(extra)
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/problem+json", headers=headers
    )


def domain_problem(exc: DomainError, instance: str | None = None) -> web.Response:
    extra: dict = {}
    headers: dict[str, str] = {}
    if isinstance(exc, ValidationFailed):
        extra["errors"] = [{"field": e.field, "message": e.message} for e in exc.errors]
    if isinstance(exc, (RateLimited, Overloaded)):
        headers["Retry-After"] = str(exc.retry_after)
    store = getattr(exc, "store", None)
    if store:
        extra["store"] = store
        headers["Retry-After"] = "2"
    return problem_response(exc.status, exc.title, exc.detail, type_=exc.type, instance=instance,
                            extra=extra, headers=headers or None)


@web.middleware
async def problem_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except DomainError as exc:
        return domain_problem(exc, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own errors (unknown route, wrong method, body too large) in our format.
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        detail = {404: "No such resource.", 413: "The request body is too large (limit 64 KiB)."}.get(
            exc.status, exc.reason)
        return problem_response(exc.status, _HTTP_TITLES.get(exc.status, exc.reason), detail,
                                instance=request.path, headers=headers or None)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a stack trace
        unavailable = as_unavailable(exc)
        if unavailable is not None:
            log.warning("%s %s: %s unavailable: %r", request.method, request.path, unavailable.store, exc)
            return domain_problem(unavailable, request.path)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(500, "Internal Server Error", "Something went wrong on our side.",
                                instance=request.path)


@web.middleware
async def metrics_middleware(request: web.Request, handler):
    started = time.perf_counter()
    response = None
    try:
        response = await handler(request)
        return response
    finally:
        resource = request.match_info.route.resource
        route = (request.match_info.route.name or (resource.canonical if resource else None)) or "unmatched"
        if not route.startswith("/socket.io"):
            metrics = request.app[appkeys.METRICS]
            status = str(response.status) if response is not None else "500"
            metrics.request_seconds.labels(request.method, route).observe(time.perf_counter() - started)
            metrics.responses.labels(request.method, route, status).inc()
