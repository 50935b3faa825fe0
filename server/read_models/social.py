"""Read models of the social graph (its lists of users are ``users.PublicUserList``;
the home feed is a ``posts.PostList``)."""
from __future__ import annotations

from typing_extensions import TypedDict


class FollowState(TypedDict):
    following: bool
