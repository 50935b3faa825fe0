"""REST: follows, followers/following lists."""
from __future__ import annotations

from aiohttp import web

from api.http import Call, Router
from api.models.common import ListQuery
from server.read_models.social import FollowState
from server.read_models.users import PublicUserList

router = Router("social")


@router.route("PUT", "/users/{user_id}/follow", name="users.follow", response=FollowState, errors=(400, 401, 404))
async def follow(request: web.Request, call: Call):
    """Follow a user (idempotent); following yourself is 400."""
    return await call.services.social.follow(call.user_id, request.match_info["user_id"])


@router.route("DELETE", "/users/{user_id}/follow", name="users.unfollow", response=FollowState,
              errors=(400, 401, 404))
async def unfollow(request: web.Request, call: Call):
    """Stop following a user (idempotent)."""
    return await call.services.social.unfollow(call.user_id, request.match_info["user_id"])


@router.route("GET", "/users/{user_id}/followers", name="users.followers", query=ListQuery,
              response=PublicUserList, errors=(400, 401, 404))
async def followers(request: web.Request, call: Call[None, ListQuery]):
    """Who follows the user, most recent follow first."""
    return await call.services.social.followers(request.match_info["user_id"], limit=call.query.limit,
                                                cursor=call.query.cursor)


@router.route("GET", "/users/{user_id}/following", name="users.following", query=ListQuery,
              response=PublicUserList, errors=(400, 401, 404))
async def following(request: web.Request, call: Call[None, ListQuery]):
    """Whom the user follows, most recent follow first."""
    return await call.services.social.following(request.match_info["user_id"], limit=call.query.limit,
                                                cursor=call.query.cursor)
