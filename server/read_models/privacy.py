"""Read models of the privacy context: an erasure request's answer and the export."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from server.read_models.users import OwnUser


class ErasurePending(TypedDict):
    status: Annotated[str, Field(description='Always "pending_erasure"')]
    purge_after: Annotated[str, Field(description="When the account is purged for good unless restored first")]


# Its own config, or it would take the document's ``extra="allow"``.
@with_config(ConfigDict(extra="ignore"))
class ExportAccount(OwnUser):
    status: str


@with_config(ConfigDict(extra="allow"))
class ExportDocument(TypedDict):
    """Everything Pulse holds about the caller. Besides the fields below, one array per
    context (posts, comments, likes, follows, events, rsvps, conversations, messages,
    notifications ...) as those contexts contribute them."""

    format: str
    generated_at: str
    account: ExportAccount
    sessions: list[dict[str, Any]]
    audit: list[dict[str, Any]]
