"""Request and response bodies of the social graph and feed endpoints."""
from __future__ import annotations

from pydantic import BaseModel


class FollowOut(BaseModel):
    following: bool
