"""Opaque keyset cursors: the sort key of the last item of a page. Never an offset: pages
stay exact while items are added or removed. ``keyset_cursor``/``decode_keyset`` are the
cursors of the Mongo documents' (timestamp, _id) pages.

A cursor is ``<base64url JSON list of values>.<base64url MAC>``: the MAC (HMAC-SHA256 with
the server's cursor key, cut to 128 bits) says this server issued it, so an edited or
invented cursor is a 400 before any of its values reaches a store. The values are still
checked strictly on the way in (kind, range, finiteness): a leaked or rotated key must not
turn into server errors either.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable
from uuid import UUID

import orjson
from bson import ObjectId

from kernel.errors import FieldError, ValidationFailed
from kernel.ids import parse_object_id

if TYPE_CHECKING:
    from kernel.settings import Settings

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_MAC_BYTES = 16
# What the MAC covers besides the payload: a cursor of another format never verifies.
_MAC_CONTEXT = b"pulse.cursor.v1\x00"
# A score as Redis writes it (and as a cursor carries it): a plain decimal number.
_DECIMAL = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d{1,3})?")


class Score(str):
    """Kind for ``Cursors.decode``: a finite decimal number kept as its text (Redis scores
    round-trip exactly as strings, not through a float)."""


def invalid_cursor(message: str = "not a cursor this server issued") -> ValidationFailed:
    return ValidationFailed("The cursor is not valid.", [FieldError("cursor", message)])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:  # spare bits set: not the text this server wrote
        raise ValueError("not canonical base64url")
    return raw


def _utc(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("not a timestamp")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("naive timestamp")
    # Stores get UTC: a value whose offset pushes it past year 1 or 9999 is refused here
    # (OverflowError) rather than in a driver.
    return moment.astimezone(timezone.utc)


def _number(value: Any, kind: type) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("not a number")
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("not a 64-bit integer")
        return value if kind is int else float(value)
    if kind is int or not math.isfinite(value):
        raise ValueError("not an integer" if kind is int else "not a finite number")
    return value


def _score(value: Any) -> Score:
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value) or not math.isfinite(float(value)):
        raise ValueError("not a finite decimal number")
    return Score(value)


def _convert(kind: type, value: Any) -> Any:
    if kind is datetime:
        return _utc(value)
    if kind is UUID:
        if not isinstance(value, str):
            raise ValueError("not a uuid")
        return UUID(value)
    if kind in (int, float):
        return _number(value, kind)
    if kind is Score:
        return _score(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError("not a string")
        return value
    raise TypeError(f"no cursor kind {kind!r}")  # a programming error, not input


class Cursors:
    """Issues and reads this deployment's cursors. Every instance must hold the same key
    (``Cursors.from_settings``), or a page asked for on another instance is a 400."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a cursor key needs at least 16 bytes")
        self._key = key

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Cursors":
        """``PULSE_CURSOR_KEY`` when set; otherwise derived from ``PULSE_AUDIT_KEY``, the
        secret every instance of a deployment already shares (compose requires it)."""
        if settings.cursor_key:
            return cls(settings.cursor_key.encode())
        return cls(hmac.new(settings.audit_key.encode(), b"pulse cursor key", hashlib.sha256).digest())

    @classmethod
    def random(cls) -> "Cursors":
        """A key of this process only (tests that build a service by hand)."""
        return cls(secrets.token_bytes(32))

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _MAC_CONTEXT + payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, *values: Any) -> str:
        parts = [v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, UUID) else v
                 for v in values]
        payload = orjson.dumps(parts)
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, cursor: str | None, *kinds: type) -> tuple | None:
        """The values of a cursor made by ``encode``, as ``kinds`` (datetime in UTC, UUID,
        int within int64, finite float, Score, str); None when there is no cursor; 400
        (field ``cursor``) when this server did not issue it or its values do not fit."""
        if cursor is None:
            return None
        try:
            payload_text, _, mac_text = cursor.partition(".")
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (ValueError, binascii.Error):
            raise invalid_cursor() from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise invalid_cursor()
        try:
            parts = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise invalid_cursor() from None
        if not isinstance(parts, list) or len(parts) != len(kinds):
            raise invalid_cursor()
        try:
            return tuple(_convert(kind, part) for kind, part in zip(kinds, parts))
        except (ValueError, OverflowError):
            raise invalid_cursor("a value of the cursor is out of range or of the wrong kind") from None


def page(rows: list, limit: int, cursor_of: Callable[[Any], str],
         serialize: Callable[[Any], Any] = lambda row: row) -> dict[str, Any]:
    """A list response from ``limit + 1`` fetched rows: the extra one says there is more."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [serialize(r) for r in rows], "next_cursor": cursor_of(rows[-1]) if more and rows else None}


def keyset_cursor(cursors: Cursors, field: str):
    """For ``page``: a document's cursor, its (``field``, _id as hex)."""
    return lambda doc: cursors.encode(doc[field], str(doc["_id"]))


def decode_keyset(cursors: Cursors, cursor: str | None) -> tuple[datetime, ObjectId] | None:
    """The (timestamp in UTC, _id) a page stopped at; a tampered cursor is a 400."""
    values = cursors.decode(cursor, datetime, str)
    if values is None:
        return None
    oid = parse_object_id(values[1])
    if oid is None:
        raise invalid_cursor("a value of the cursor is out of range or of the wrong kind")
    return values[0], oid
