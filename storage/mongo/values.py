"""Value conventions of the Mongo documents: ObjectId ids (hex strings in the API),
timestamps at MongoDB's millisecond precision, keyset cursors of (createdAt, _id)."""
from __future__ import annotations

from datetime import datetime

from bson import ObjectId
from bson.errors import InvalidId

from server.cursors import decode_cursor, encode_cursor
from server.errors import FieldError, ValidationFailed
from server.timefmt import utcnow


def mongo_now() -> datetime:
    """Now, truncated to milliseconds: what MongoDB stores, so a document built here
    equals the one read back later (an idempotent retry returns the same timestamps)."""
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def parse_object_id(value: object) -> ObjectId | None:
    if not isinstance(value, str):
        return None
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None


def encode_keyset(moment: datetime, oid: ObjectId) -> str:
    return encode_cursor(moment, str(oid))


def decode_keyset(cursor: str | None) -> tuple[datetime, ObjectId] | None:
    """The (timestamp, _id) a page stopped at; a tampered cursor is a 400."""
    values = decode_cursor(cursor, datetime, str)
    if values is None:
        return None
    oid = parse_object_id(values[1])
    if oid is None:
        raise ValidationFailed("The cursor is not valid.", [FieldError("cursor", "not a valid cursor")])
    return values[0], oid
