"""Bodies of the privacy endpoints (export, erasure, restore)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.models.users import OwnUser


class ErasureOut(BaseModel):
    status: str = Field(description='Always "pending_erasure"')
    purge_after: str = Field(description="When the account is purged for good unless restored first")


class ExportAccount(OwnUser):
    status: str


class ExportDocument(BaseModel):
    """Everything Pulse holds about the caller. Besides the fields below, one array per
    context (posts, comments, likes, follows, events, rsvps, conversations, messages,
    notifications ...) as those contexts contribute them."""

    model_config = ConfigDict(extra="allow")
    format: str
    generated_at: str
    account: ExportAccount
    sessions: list[dict[str, Any]]
    audit: list[dict[str, Any]]
