"""The browser-facing root paths: the web console at `/`, interactive REST docs at
`/docs` and the AsyncAPI document at `/asyncapi.json` (API.md "Web console and
documents"). The AsyncAPI document is the real-time front door's; ``create_app`` hands
it over, so neither front door imports the other. Everything is served from files
inside the installed packages: the console's own static files (api/console/) and
Swagger UI from the swagger-ui-bundle distribution; nothing is loaded from another
origin."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from api.http import json_response

CONSOLE_DIR = Path(str(resources.files("api") / "console"))

# Same-origin only: the console talks to this server's REST API and Socket.IO
# (ws:/wss: are listed because 'self' does not cover them in every browser).
# Swagger UI sets inline styles, hence 'unsafe-inline' for styles (never for scripts).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def swagger_ui_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def _page(name: str) -> web.Response:
    return web.Response(body=(CONSOLE_DIR / name).read_bytes(), content_type="text/html", charset="utf-8",
                        headers=PAGE_HEADERS)


async def console(request: web.Request) -> web.Response:
    return _page("index.html")


async def docs(request: web.Request) -> web.Response:
    return _page("docs.html")


def add_web_routes(app: web.Application, asyncapi_document: Callable[[], dict[str, Any]]) -> None:
    async def asyncapi(request: web.Request) -> web.Response:
        return json_response(asyncapi_document())

    app.router.add_get("/", console, name="web.console")
    app.router.add_get("/docs", docs, name="web.docs")
    app.router.add_get("/asyncapi.json", asyncapi, name="web.asyncapi")
    app.router.add_static("/console/", CONSOLE_DIR, name="web.console_static")
    app.router.add_static("/docs/static/", swagger_ui_dir(), name="web.docs_static")
