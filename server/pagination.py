"""Opaque keyset cursors: the sort key of the last item of a page, base64url-encoded
JSON. Never an offset: pages stay exact while items are added or removed."""
from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Callable
from uuid import UUID

import orjson

from server.errors import FieldError, ValidationFailed


def encode_cursor(*values: Any) -> str:
    parts = [v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, UUID) else v for v in values]
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def _invalid() -> ValidationFailed:
    return ValidationFailed("The request query is not valid.", [FieldError("cursor", "invalid cursor")])


def decode_cursor(cursor: str | None, *kinds: type) -> tuple | None:
    """The values of a cursor made by ``encode_cursor``, converted to ``kinds`` (datetime,
    UUID, int, float, str); None when there is no cursor; 400 when it is not one of ours."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise _invalid() from None
    if not isinstance(parts, list) or len(parts) != len(kinds):
        raise _invalid()
    values: list[Any] = []
    try:
        for kind, part in zip(kinds, parts):
            if kind is datetime:
                value = datetime.fromisoformat(part)
                if value.tzinfo is None:
                    raise ValueError("naive timestamp")
            elif kind is UUID:
                value = UUID(part)
            elif kind in (int, float):
                if isinstance(part, bool) or not isinstance(part, (int, float)):
                    raise ValueError("not a number")
                value = kind(part)
            else:
                value = str(part)
            values.append(value)
    except (TypeError, ValueError, AttributeError):
        raise _invalid() from None
    return tuple(values)


def page(rows: list, limit: int, cursor_of: Callable[[Any], str],
         serialize: Callable[[Any], Any] = lambda row: row) -> dict[str, Any]:
    """A list response from ``limit + 1`` fetched rows: the extra one says there is more."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [serialize(r) for r in rows], "next_cursor": cursor_of(rows[-1]) if more and rows else None}
