"""Installs every REST endpoint on the app, and the OpenAPI document describing them."""
from __future__ import annotations

import functools
from typing import Any, Callable

from aiohttp import web

from api import events, feed, messaging, notifications, posts, privacy, social, users
from api.http import Endpoint, make_aiohttp_handler
from api.openapi import build_openapi
from api.ops import add_ops_routes
from api.web import add_web_routes

ROUTERS = [users.router, posts.router, social.router, feed.router, events.router, messaging.router,
           notifications.router, privacy.router]


def all_endpoints() -> list[Endpoint]:
    return [ep for router in ROUTERS for ep in router.endpoints]


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The declarations are fixed at import, so the document is built once a process."""
    return build_openapi(all_endpoints())


def setup_routes(app: web.Application, *, asyncapi_document: Callable[[], dict[str, Any]]) -> None:
    """``asyncapi_document``: the real-time contract's document, served at /asyncapi.json."""
    add_ops_routes(app, openapi_document)
    add_web_routes(app, asyncapi_document)
    for ep in all_endpoints():
        app.router.add_route(ep.method, ep.path, make_aiohttp_handler(ep), name=ep.name)
