"""Value conventions of the Mongo documents: timestamps at MongoDB's millisecond precision,
keyset pages of (createdAt, _id) (their cursors: ``kernel.cursors.keyset_cursor``)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from kernel.timefmt import utcnow


def mongo_now() -> datetime:
    """Now, truncated to milliseconds: what MongoDB stores, so a document built here
    equals the one read back later (an idempotent retry returns the same timestamps)."""
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def order_key(moment: datetime, oid: ObjectId) -> str:
    """(moment, oid) as one string that sorts the same way: fixed-width UTC digits, then the
    id's 24 hex digits. Conditional updates compare it in a single predicate ("only if newer":
    ``{key: {"$not": {"$gte": k}}}``, which a missing key also passes) instead of an ``$or``
    over the pair, which some engines (SecantusDB) answer with a collection scan even beside
    an ``_id`` match."""
    return f"{moment.astimezone(timezone.utc):%Y%m%d%H%M%S%f}{oid}"


async def insert_unique(collection: AsyncCollection, doc: dict[str, Any]) -> bool:
    """Insert ``doc``; False when a unique index says an equal one is stored already."""
    try:
        await collection.insert_one(doc)
    except DuplicateKeyError:
        return False
    return True


async def keyset_page(
    collection: AsyncCollection, query: dict[str, Any], field: str,
    after: tuple[datetime, ObjectId] | None, limit: int, *, newest_first: bool,
) -> list[dict[str, Any]]:
    """A page of ``query`` in (``field``, _id) order, starting after the (moment, id) of the
    previous page's last document. The documents beyond the moment and the few that share it
    (beyond the id) are asked for apart and merged: each is one indexed range, where an $or
    over both sends some engines (SecantusDB) through the whole collection."""
    direction = -1 if newest_first else 1
    order = [(field, direction), ("_id", direction)]
    if after is None:
        return await collection.find(query).sort(order).limit(limit).to_list(None)
    moment, oid = after
    beyond = "$lt" if newest_first else "$gt"
    ties, rest = await asyncio.gather(
        collection.find({**query, field: moment, "_id": {beyond: oid}}).sort(order).limit(limit).to_list(None),
        collection.find({**query, field: {beyond: moment}}).sort(order).limit(limit).to_list(None),
    )
    return (ties + rest)[:limit]  # the ties come first in either direction


async def count_after(collection: AsyncCollection, query: dict[str, Any], field: str,
                      after: tuple[datetime, ObjectId], *, limit: int = 0) -> int:
    """How many documents of ``query`` come after (moment, id) in (``field``, _id) order
    (each of the two counts stops at ``limit``, when given); two indexed counts rather
    than one $or (see ``keyset_page``)."""
    moment, oid = after
    bound = {"limit": limit} if limit else {}
    later, ties = await asyncio.gather(
        collection.count_documents({**query, field: {"$gt": moment}}, **bound),
        collection.count_documents({**query, field: moment, "_id": {"$gt": oid}}, **bound),
    )
    return later + ties


# DuplicateKey: a unique index already holds an equal document.
DUPLICATE_KEY = 11000


class DocumentRefused(Exception):
    """MongoDB refused one document of a batch (not for a duplicate key of the index the
    caller tells retries apart by): the server's message."""


@dataclass(frozen=True)
class BatchInsert:
    """What one ``insert_many(ordered=False)`` did with each document, by position."""

    duplicates: frozenset[int]  # an equal one is stored: the unique index named said so
    refused: dict[int, DocumentRefused]  # any other write error of that document


async def insert_batch(collection: AsyncCollection, docs: list[dict[str, Any]], unique_index: str,
                       unique_keys: tuple[str, ...]) -> BatchInsert:
    """Insert ``docs`` in one round trip, each on its own (one refused document does not
    stop the others). A duplicate key counts as a duplicate only on ``unique_index``
    (``unique_keys``, as MongoDB reports its key pattern): on another one (e.g. ``_id``)
    the document is refused. A failure of the whole command (the store down, a write
    concern error) raises."""
    if not docs:
        return BatchInsert(frozenset(), {})
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        if exc.details.get("writeConcernErrors"):
            raise
        duplicates, refused = set(), {}
        for error in exc.details.get("writeErrors", []):
            if error.get("code") == DUPLICATE_KEY and _names_index(error, unique_index, unique_keys):
                duplicates.add(error["index"])
            else:
                refused[error["index"]] = DocumentRefused(error.get("errmsg") or f"code {error.get('code')}")
        return BatchInsert(frozenset(duplicates), refused)
    return BatchInsert(frozenset(), {})


def _names_index(error: dict[str, Any], name: str, keys: tuple[str, ...]) -> bool:
    pattern = error.get("keyPattern")
    if pattern is not None:
        return tuple(pattern) == keys
    return f"index: {name} " in (error.get("errmsg") or "")  # servers that report no key pattern


async def insert_new(collection: AsyncCollection, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert ``docs`` in one round trip; returns those stored, leaving out the ones a unique
    index says are stored already (any other failure raises)."""
    if not docs:
        return []
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if exc.details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        duplicates = {e["index"] for e in errors}
        return [doc for i, doc in enumerate(docs) if i not in duplicates]
    return docs
