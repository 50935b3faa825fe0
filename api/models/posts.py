"""Request and response bodies of the posts, comments and likes endpoints."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, StringConstraints

from api.models.common import UserRef

# Surrounding whitespace is dropped; a body of only whitespace is empty (400).
PostBody = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]
CommentBody = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class PostIn(BaseModel):
    body: PostBody


class CommentIn(BaseModel):
    body: CommentBody


class Post(BaseModel):
    id: str
    author: UserRef
    body: str
    created_at: str
    like_count: int
    comment_count: int
    liked_by_me: bool


class PostList(BaseModel):
    items: list[Post]
    next_cursor: str | None


class Comment(BaseModel):
    id: str
    post_id: str
    author: UserRef
    body: str
    created_at: str


class CommentList(BaseModel):
    items: list[Comment]
    next_cursor: str | None


class LikeState(BaseModel):
    liked: bool
    like_count: int
