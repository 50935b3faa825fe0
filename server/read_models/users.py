"""Read models of the users context: profiles, and what signing in answers."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field
from typing_extensions import TypedDict


class UserRef(TypedDict):
    """Who wrote a post or comment, or hosts an event."""

    id: str
    username: str
    display_name: str


class PublicUser(TypedDict):
    id: str
    username: str
    display_name: str
    bio: str
    avatar_url: str | None
    created_at: str
    followers_count: int
    following_count: int
    posts_count: int


class OwnUser(PublicUser):
    """The caller's own profile: the public one and the email."""

    email: str


class PublicUserList(TypedDict):
    items: list[PublicUser]
    next_cursor: str | None


class SignedIn(TypedDict):
    """What registering, logging in and restoring an account answer."""

    user: OwnUser
    token: Annotated[str, Field(description="Opaque bearer token")]
