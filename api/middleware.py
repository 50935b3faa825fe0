"""The one place errors become application/problem+json, and requests become metrics.

Every request has an id (``X-Request-Id``: the caller's when it is a plain token, else a
new one), sent back in the same header, and in a server error's problem document as
``request_id``. New ids are a random prefix per process and a counter: unique across
instances, and no system call per request (``uuid4`` reads the kernel's random source).
Client errors (4xx) are not logged: they are the caller's, and a traceback per bad
request would bury the real ones. A server error (5xx) is logged once, on one line that
carries the request id, so a report quoting the id finds the line.
"""
from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
import traceback

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from kernel.errors import DomainError, Overloaded, RateLimited, StoreUnavailable, ValidationFailed
from server import appkeys

log = logging.getLogger("pulse.api")

REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
# What a caller (or the proxy in front) may name a request: short, and nothing that could
# forge a log line.
_GIVEN_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_HTTP_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
    500: "Internal Server Error", 503: "Service Unavailable",
}


_ID_PREFIX = secrets.token_hex(10)
_id_counter = itertools.count()


def new_request_id() -> str:
    """32 hex digits, like a uuid4's: 80 random bits per process, then a 48-bit counter."""
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFF_FFFF_FFFF:012x}"


def _id_for(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER)
    return given if given and _GIVEN_REQUEST_ID.fullmatch(given) else new_request_id()


def request_id(request: web.Request) -> str:
    """The id of this request (the caller's, when it is a plain token, else a new one)."""
    rid = request.get(REQUEST_ID)
    if rid is None:
        rid = request[REQUEST_ID] = _id_for(request)
    return rid


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, streamed ones too, names its request."""
    try:
        rid = request[REQUEST_ID]  # set by the middleware: no lookup that misses
    except KeyError:
        rid = request_id(request)
    response.headers[REQUEST_ID_HEADER] = rid


def problem_response(
    status: int, title: str, detail: str, *, type_: str | None = None, instance: str | None = None,
    extra: dict | None = None, headers: dict[str, str] | None = None, request_id: str | None = None,
) -> web.Response:
    body = {
        "type": type_ or "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if request_id and status >= 500:
        # What to quote when reporting it. Not on client errors: those bodies stay the same
        # for the same mistake (a login limit answers a known and an unknown account alike).
        body["request_id"] = request_id
    if extra:
        body.update(extra)
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/problem+json", headers=headers
    )


def domain_problem(exc: DomainError, instance: str | None = None, request_id: str | None = None) -> web.Response:
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
                            extra=extra, headers=headers or None, request_id=request_id)


def _one_line(exc: BaseException) -> str:
    """The exception and where it was raised (innermost frames last), on one line."""
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    where = " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(frames))
    return f"{type(exc).__name__}: {exc}".replace("\n", " ") + (f" at {where}" if where else "")


def _domain_error_line(exc: DomainError) -> str:
    if isinstance(exc, StoreUnavailable) and exc.driver_error is not None:
        return f"{exc.store} unavailable: {exc.driver_error!r}"[:500]  # the driver's words
    return f"{type(exc).__name__}: {exc.detail}"


def log_server_error(request: web.Request, status: int, what: str) -> None:
    log.error("request %s: %s %s answered %d: %s", request_id(request), request.method, request.path, status, what)


class ClientErrorsWithoutTraceback(logging.Filter):
    """For aiohttp's protocol logger: a request it could not parse (a 4xx it answers
    itself, before any middleware) is the client's error, logged on one line at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 500) < 500:
            record.msg, record.args = "%s (answered %d): %s", (record.getMessage(), exc.code, exc.message)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install_log_filters() -> None:
    """Idempotent: every app of the process shares aiohttp's logger."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorsWithoutTraceback) for f in server_log.filters):
        server_log.addFilter(ClientErrorsWithoutTraceback())


def problem_for(request: web.Request, exc: Exception) -> web.Response:
    """The problem document that answers ``exc`` (logged once when it is a server error);
    an ``HTTPException`` that is no error (a redirect) is raised again."""
    rid = request_id(request)
    if isinstance(exc, DomainError):  # storage raises a store outage as one (StoreUnavailable)
        if exc.status >= 500:
            log_server_error(request, exc.status, _domain_error_line(exc))
        return domain_problem(exc, request.path, rid)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        # aiohttp's own errors (unknown route, wrong method, body too large) in our format.
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        detail = {404: "No such resource.", 413: "The request body is too large (limit 64 KiB)."}.get(
            exc.status, exc.reason)
        if exc.status >= 500:
            log_server_error(request, exc.status, exc.reason)
        return problem_response(exc.status, _HTTP_TITLES.get(exc.status, exc.reason), detail,
                                instance=request.path, headers=headers or None, request_id=rid)
    # The last line of defence: never a stack trace.
    log_server_error(request, 500, _one_line(exc))
    return problem_response(500, "Internal Server Error", "Something went wrong on our side.",
                            instance=request.path, request_id=rid)


@web.middleware
async def problem_middleware(request: web.Request, handler):
    """Errors as problem documents (the app uses ``request_middleware``, which also counts)."""
    request_id(request)
    try:
        return await handler(request)
    except Exception as exc:  # noqa: BLE001 - mapped, or raised again by problem_for
        return problem_for(request, exc)


# Methods named in metrics as they are; any other a client sends counts as "other" (a label
# per invented method would grow the registry without bound).
_METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def request_middleware(request: web.Request, handler):
    """The app's one middleware: latency and status per route around the problem mapping
    (one layer, not two, on every request)."""
    started = time.perf_counter()
    request[REQUEST_ID] = _id_for(request)
    response = None
    try:
        try:
            response = await handler(request)
        except Exception as exc:  # noqa: BLE001 - mapped, or raised again by problem_for
            response = problem_for(request, exc)
        return response
    finally:
        route_info = request.match_info.route
        route = route_info.name
        if route is None:
            resource = route_info.resource
            route = (resource.canonical if resource else None) or "unmatched"
        if not route.startswith("/socket.io"):
            method = request.method
            request.app[appkeys.METRICS].observe_request(
                method if method in _METRIC_METHODS else "other", route,
                response.status if response is not None else 500, time.perf_counter() - started)
