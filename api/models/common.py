"""Request models shared by several resources, and the problem document of every error.
Response bodies are read models (``server.read_models``)."""
from __future__ import annotations

from pydantic import BaseModel, Field


class ListQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, max_length=512)


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
