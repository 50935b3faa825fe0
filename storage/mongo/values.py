"""Value conventions of the Mongo documents: ObjectId ids (hex strings in the API),
timestamps at MongoDB's millisecond precision, keyset cursors of (createdAt, _id)."""
from __future__ import annotations

from datetime import datetime

from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from server.pagination import decode_cursor, encode_cursor
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


async def insert_unique(collection: AsyncCollection, doc: dict[str, Any]) -> bool:
    """Insert ``doc``; False when a unique index says an equal one is stored already."""
    try:
        await collection.insert_one(doc)
    except DuplicateKeyError:
        return False
    return True


def older_than(field: str, moment: datetime, oid: ObjectId) -> dict[str, Any]:
    """Filter: documents before (``moment``, ``oid``) in (``field``, _id) order, i.e.
    the next ones of a newest-first list."""
    return {"$or": [{field: {"$lt": moment}}, {field: moment, "_id": {"$lt": oid}}]}


def newer_than(field: str, moment: datetime, oid: ObjectId) -> dict[str, Any]:
    """Filter: documents after (``moment``, ``oid``) in (``field``, _id) order."""
    return {"$or": [{field: {"$gt": moment}}, {field: moment, "_id": {"$gt": oid}}]}


def keyset_cursor(field: str):
    """For ``server.pagination.page``: a document's cursor, its (``field``, _id as hex)."""
    return lambda doc: encode_cursor(doc[field], str(doc["_id"]))


def decode_keyset(cursor: str | None) -> tuple[datetime, ObjectId] | None:
    """The (timestamp, _id) a page stopped at; a tampered cursor is a 400."""
    values = decode_cursor(cursor, datetime, str)
    if values is None:
        return None
    oid = parse_object_id(values[1])
    if oid is None:
        raise ValidationFailed("The cursor is not valid.", [FieldError("cursor", "not a valid cursor")])
    return values[0], oid
