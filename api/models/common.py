"""Models shared by several resources."""
from __future__ import annotations

from pydantic import BaseModel, Field


class ListQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, max_length=512)


class UserRef(BaseModel):
    id: str
    username: str
    display_name: str


class PublicUser(BaseModel):
    id: str
    username: str
    display_name: str
    bio: str
    avatar_url: str | None
    created_at: str
    followers_count: int
    following_count: int
    posts_count: int


class PublicUserList(BaseModel):
    items: list[PublicUser]
    next_cursor: str | None


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    # On server errors: the id of the request (also its X-Request-Id header), which the
    # one log line of the error names.
    request_id: str | None = None
    errors: list[dict[str, str]] | None = None
