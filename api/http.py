"""Route declarations and the request pipeline shared by every REST handler:
content type and JSON parsing, pydantic validation, bearer authentication, JSON output.

Handlers are ``async def handler(request, call) -> result``; a result that is not a
``web.StreamResponse`` is written as JSON by the serialiser of the endpoint's declared
response (a read model, ``server.read_models``) with the endpoint's success status, or
another one it also declares (``WithStatus``). /openapi.json describes the same
declaration, so the document and the bytes cannot drift.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from kernel.errors import FieldError, NotFound, UnsupportedMediaType, ValidationFailed
from server import appkeys
from server.services import Services
from server.services.users import ClientInfo, Principal

API_PREFIX = "/api/v1"
B = TypeVar("B", bound=BaseModel)
Q = TypeVar("Q", bound=BaseModel)


@dataclass
class Call(Generic[B, Q]):
    """What a handler gets besides the request: validated input and the caller."""

    services: Services
    principal: Principal | None
    body: Any = None
    query: Any = None
    request: web.Request | None = None

    @property
    def client(self) -> ClientInfo:
        """The caller's address and user agent, worked out only for handlers that ask."""
        return client_info(self.request) if self.request is not None else ClientInfo(address="unknown")

    @property
    def user_id(self) -> str:
        assert self.principal is not None, "endpoint is declared with auth=False"
        return self.principal.user_id


Handler = Callable[[web.Request, Call], Awaitable[Any]]


@dataclass
class Endpoint:
    method: str
    path: str
    name: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None  # a read model (or list of one), or None for no content
    status: int = 200
    auth: bool = True
    errors: tuple[int, ...] = ()
    also: tuple[int, ...] = ()  # other success statuses with the same body (e.g. 200 for an existing one)


@dataclass(frozen=True)
class WithStatus:
    """A handler's result sent with one of the endpoint's ``also`` statuses."""

    body: Any
    status: int


@functools.cache
def response_adapter(shape: Any) -> TypeAdapter:
    """The one adapter of a response shape (a read model, or list of one): its
    ``dump_json`` writes the response bytes, its schema is the one /openapi.json gives.
    pydantic-core's serialiser writes the declared fields only and validates nothing (a
    service's result is trusted data), within microseconds of a bare ``orjson.dumps``."""
    return TypeAdapter(shape)


class Router:
    """Collects endpoint declarations; ``api.routes`` installs them and /openapi.json reads them."""

    def __init__(self, tag: str, prefix: str = API_PREFIX) -> None:
        self.tag = tag
        self.prefix = prefix
        self.endpoints: list[Endpoint] = []

    def route(
        self, method: str, path: str, *, name: str, summary: str = "", body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None, response: Any = None, status: int = 200, auth: bool = True,
        errors: tuple[int, ...] = (), also: tuple[int, ...] = (),
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(Endpoint(
                method=method, path=self.prefix + path, name=name, handler=handler,
                summary=summary or (handler.__doc__ or "").strip().split("\n")[0], tag=self.tag,
                body=body, query=query, response=response, status=status, auth=auth, errors=errors,
                also=also,
            ))
            return handler
        return register


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def field_errors(exc: ValidationError) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__") or "body"
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        errors.append(FieldError(field=loc, message=message))
    return errors


async def read_json_body(request: web.Request) -> Any:
    """The request's JSON document: 415 for another content type, 400 when malformed.
    The 64 KiB limit is the app's ``client_max_size`` (413 from aiohttp)."""
    raw = await request.read()
    if not raw:
        raise ValidationFailed("A JSON body is required.", [FieldError("body", "required")])
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType("Send the body as application/json.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"Malformed JSON: {exc}") from exc


def nul_fields(data: Any, path: str = "") -> list[str]:
    """Where a text value holds a NUL character, which no store of ours can keep
    (PostgreSQL text refuses it): such input is invalid, not a server error."""
    if isinstance(data, str):
        return [path or "body"] if "\x00" in data else []
    if isinstance(data, dict):
        return [f for k, v in data.items() for f in nul_fields(v, f"{path}.{k}" if path else str(k))] + (
            [path or "body"] if any("\x00" in str(k) for k in data) else [])
    if isinstance(data, list):
        return [f for i, v in enumerate(data) for f in nul_fields(v, f"{path}.{i}" if path else str(i))]
    return []


def validate(model: type[B], data: Any, *, what: str = "body", may_hold_nul: bool = True) -> B:
    """``may_hold_nul=False`` when the caller knows the input has no NUL character (the
    usual case), which spares the walk over the validated values."""
    try:
        value = model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(f"The request {what} is not valid.", field_errors(exc)) from exc
    if not may_hold_nul:
        return value
    bad = nul_fields(value.model_dump(by_alias=True, exclude_unset=True))  # only what the model keeps
    if bad:
        raise ValidationFailed(f"The request {what} is not valid.",
                               [FieldError(f, "must not contain NUL characters") for f in bad])
    return value


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def client_info(request: web.Request) -> ClientInfo:
    address = request.remote or "unknown"
    if request.app[appkeys.SETTINGS].trust_forwarded_for:
        # The proxy appends the peer it saw: the last hop is the one we can trust.
        forwarded = request.headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1].strip()
        address = forwarded or address
    return ClientInfo(address=address, user_agent=request.headers.get("User-Agent"))


def make_aiohttp_handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    serialize = response_adapter(endpoint.response).dump_json if endpoint.response is not None else None
    statuses = (endpoint.status, *endpoint.also)

    async def aiohttp_handler(request: web.Request) -> web.StreamResponse:
        services = request.app[appkeys.SERVICES]
        match_info = request.match_info
        if match_info and any("\x00" in value for value in match_info.values()):
            raise NotFound("No such resource.")  # no id or username holds a NUL
        principal = None
        if endpoint.auth:
            principal = await services.users.authenticate(bearer_token(request))
            if services.rate_limits.enabled:
                await services.rate_limits.check_request(principal.token_hash.hex())
        call: Call = Call(services=services, principal=principal, request=request)
        if endpoint.query is not None:
            query = dict(request.query)
            call.query = validate(endpoint.query, query, what="query",
                                  may_hold_nul=any("\x00" in k or "\x00" in v for k, v in query.items()))
        if endpoint.body is not None:
            body = await read_json_body(request)
            # JSON can only carry a NUL escaped, as \u0000: one scan of the raw bytes.
            call.body = validate(endpoint.body, body, may_hold_nul=b"\\u0000" in await request.read())
        result = await endpoint.handler(request, call)
        if isinstance(result, web.StreamResponse):
            return result
        status = endpoint.status
        if isinstance(result, WithStatus):
            if result.status not in statuses:
                raise RuntimeError(f"{endpoint.name} does not declare status {result.status}")
            result, status = result.body, result.status
        if result is None:
            return web.Response(status=204 if status in (200, 204) else status)
        if serialize is None:
            raise RuntimeError(f"{endpoint.name} declares no response body")
        return web.Response(body=serialize(result), status=status, content_type="application/json")

    aiohttp_handler.__name__ = endpoint.handler.__name__
    return aiohttp_handler
