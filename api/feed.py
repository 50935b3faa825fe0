"""REST: the home feed."""
from __future__ import annotations

from aiohttp import web

from api.http import Call, Router
from api.models.common import ListQuery
from server.read_models.posts import PostList

router = Router("social")


@router.route("GET", "/feed", name="feed", query=ListQuery, response=PostList, errors=(400, 401))
async def feed(request: web.Request, call: Call[None, ListQuery]):
    """Posts from followed users and yourself, newest first (eventually consistent)."""
    return await call.services.feed.page(call.user_id, limit=call.query.limit, cursor=call.query.cursor)
