"""Request bodies of the posts and comments endpoints (responses: ``server.read_models.posts``)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, StringConstraints

# Surrounding whitespace is dropped; a body of only whitespace is empty (400).
PostBody = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]
CommentBody = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class PostIn(BaseModel):
    body: PostBody


class CommentIn(BaseModel):
    body: CommentBody
