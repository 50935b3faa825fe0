"""Opaque keyset cursors: the last item's sort key, base64 of a small JSON array.

Lists never use OFFSET; a cursor names where the previous page stopped. A cursor a
client tampered with is a 400, never a 500.
"""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import orjson

from server.errors import FieldError, ValidationFailed


def encode_cursor(*values: Any) -> str:
    """``values``: datetimes, UUIDs, numbers or strings (the keyset of the last item)."""
    parts = [v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, UUID) else v for v in values]
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(cursor: str | None, *kinds: type) -> tuple[Any, ...] | None:
    """The keyset values of ``cursor`` as ``kinds`` (datetime, UUID, int, float, str);
    None when there is no cursor."""
    if cursor is None:
        return None
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(parts, list) or len(parts) != len(kinds):
            raise ValueError("wrong shape")
        return tuple(_as(kind, part) for kind, part in zip(kinds, parts))
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValidationFailed("The cursor is not valid.", [FieldError("cursor", "not a valid cursor")]) from exc


def _as(kind: type, value: Any) -> Any:
    if kind is datetime:
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    if kind is UUID:
        return UUID(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("not an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("not a number")
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"cannot read {kind.__name__}")


def page(rows: list, limit: int, key) -> tuple[list, str | None]:
    """Splits ``limit + 1`` fetched rows into a page and the cursor of the next one."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(*key(rows[-1]))
    return rows, None
