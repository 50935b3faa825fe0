"""REST: posts, comments, likes."""
from __future__ import annotations

from aiohttp import web

from api.http import Call, Router
from api.models.common import ListQuery
from api.models.posts import CommentIn, PostIn
from server.read_models.posts import Comment, CommentList, LikeState, Post, PostList

router = Router("posts")


@router.route("POST", "/posts", name="posts.create", body=PostIn, response=Post, status=201,
              errors=(400, 401, 413, 415))
async def create_post(request: web.Request, call: Call[PostIn, None]):
    """Publish a post."""
    return await call.services.posts.create(call.user_id, call.body.body)


# Registered before /posts/{id}: "popular" is not a post id.
@router.route("GET", "/posts/popular", name="posts.popular", query=ListQuery, response=PostList,
              errors=(400, 401))
async def popular_posts(request: web.Request, call: Call[None, ListQuery]):
    """The most liked posts of the recent window."""
    return await call.services.posts.popular(call.user_id, limit=call.query.limit, cursor=call.query.cursor)


@router.route("GET", "/posts/{id}", name="posts.get", response=Post, errors=(401, 404))
async def get_post(request: web.Request, call: Call):
    """One post."""
    return await call.services.posts.get(call.user_id, request.match_info["id"])


@router.route("DELETE", "/posts/{id}", name="posts.delete", status=204, errors=(401, 403, 404))
async def delete_post(request: web.Request, call: Call):
    """Delete a post (its author only)."""
    await call.services.posts.delete(call.user_id, request.match_info["id"])


@router.route("GET", "/users/{id}/posts", name="users.posts", query=ListQuery, response=PostList,
              errors=(400, 401, 404))
async def user_posts(request: web.Request, call: Call[None, ListQuery]):
    """A user's posts (by id or username), newest first."""
    return await call.services.posts.list_by_author(call.user_id, request.match_info["id"],
                                                    limit=call.query.limit, cursor=call.query.cursor)


@router.route("POST", "/posts/{id}/comments", name="comments.create", body=CommentIn, response=Comment,
              status=201, errors=(400, 401, 404, 413, 415))
async def create_comment(request: web.Request, call: Call[CommentIn, None]):
    """Comment on a post."""
    return await call.services.posts.add_comment(call.user_id, request.match_info["id"], call.body.body)


@router.route("GET", "/posts/{id}/comments", name="comments.list", query=ListQuery, response=CommentList,
              errors=(400, 401, 404))
async def list_comments(request: web.Request, call: Call[None, ListQuery]):
    """A post's comments, oldest first."""
    return await call.services.posts.list_comments(request.match_info["id"], limit=call.query.limit,
                                                   cursor=call.query.cursor, viewer_id=call.user_id)


@router.route("DELETE", "/comments/{id}", name="comments.delete", status=204, errors=(401, 403, 404))
async def delete_comment(request: web.Request, call: Call):
    """Delete a comment (its author or the post's author)."""
    await call.services.posts.delete_comment(call.user_id, request.match_info["id"])


@router.route("PUT", "/posts/{id}/like", name="posts.like", response=LikeState, errors=(401, 404))
async def like_post(request: web.Request, call: Call):
    """Like a post (idempotent)."""
    return await call.services.posts.like(call.user_id, request.match_info["id"])


@router.route("DELETE", "/posts/{id}/like", name="posts.unlike", response=LikeState, errors=(401, 404))
async def unlike_post(request: web.Request, call: Call):
    """Take a like back (idempotent)."""
    return await call.services.posts.unlike(call.user_id, request.match_info["id"])
