"""Read models of the posts context: posts, comments, likes."""
from __future__ import annotations

from typing_extensions import TypedDict

from server.read_models.users import UserRef


class Post(TypedDict):
    id: str
    author: UserRef
    body: str
    created_at: str
    like_count: int
    comment_count: int
    liked_by_me: bool


class PostList(TypedDict):
    items: list[Post]
    next_cursor: str | None


class Comment(TypedDict):
    id: str
    post_id: str
    author: UserRef
    body: str
    created_at: str


class CommentList(TypedDict):
    items: list[Comment]
    next_cursor: str | None


class LikeState(TypedDict):
    liked: bool
    like_count: int
