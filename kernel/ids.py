"""Ids as the API writes them, parsed: None when the text is not one (callers answer 404 or
400 as the contract says), never an exception."""
from __future__ import annotations

import re
from uuid import UUID

from bson import ObjectId
from bson.errors import InvalidId


# A UUID as str(UUID) writes it.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_uuid(value: str) -> str | None:
    """``str(UUID(value))``, or None when it is no UUID; text already in that form (ids we
    wrote) comes back as it is, unparsed: ``uuid.UUID`` and its ``str`` are Python code."""
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value
    uid = parse_uuid(value)
    return str(uid) if uid is not None else None


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
