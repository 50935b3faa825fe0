"""Ids as the API writes them, parsed: None when the text is not one (callers answer 404 or
400 as the contract says), never an exception."""
from __future__ import annotations

from uuid import UUID

from bson import ObjectId
from bson.errors import InvalidId


def parse_uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


def parse_object_id(value: object) -> ObjectId | None:
    if not isinstance(value, str):
        return None
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None
