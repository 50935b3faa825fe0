"""Keyset pages and counts over (moment, _id) without $or: ties on the moment are kept in
order across page boundaries, in both directions."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from storage.mongo.values import DocumentRefused, count_after, insert_batch, insert_new, keyset_page, mongo_now

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def collection(settings):
    client = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    db = client[f"values_{uuid.uuid4().hex[:8]}"]
    yield db["things"]
    await client.drop_database(db.name)
    await client.close()


async def test_pages_walk_every_document_once_in_order_with_ties(collection):
    at = mongo_now()
    # Many documents share a moment, so page boundaries fall inside runs of ties.
    docs = [{"_id": ObjectId(), "owner": "a", "at": at + timedelta(milliseconds=i // 4)} for i in range(23)]
    docs.append({"_id": ObjectId(), "owner": "b", "at": at})  # someone else's: never listed
    await collection.insert_many(docs)
    mine = [d for d in docs if d["owner"] == "a"]
    for newest_first in (True, False):
        expected = sorted(mine, key=lambda d: (d["at"], d["_id"]), reverse=newest_first)
        seen, after = [], None
        while True:
            page = await keyset_page(collection, {"owner": "a"}, "at", after, 5, newest_first=newest_first)
            seen += page
            if len(page) < 5:
                break
            after = (page[-1]["at"], page[-1]["_id"])
        assert [d["_id"] for d in seen] == [d["_id"] for d in expected]


async def test_count_after_counts_later_moments_and_later_ties(collection):
    at = mongo_now()
    low, mid, high = ObjectId("0" * 24), ObjectId("5" * 24), ObjectId("f" * 24)
    await collection.insert_many([
        {"_id": low, "owner": "a", "at": at}, {"_id": mid, "owner": "a", "at": at},
        {"_id": high, "owner": "a", "at": at}, {"_id": ObjectId(), "owner": "a", "at": at + timedelta(seconds=1)},
        {"_id": ObjectId(), "owner": "a", "at": at - timedelta(seconds=1)},
        {"_id": ObjectId(), "owner": "b", "at": at + timedelta(seconds=1)},
    ])
    assert await count_after(collection, {"owner": "a"}, "at", (at, mid)) == 2  # high + the later one
    assert await count_after(collection, {"owner": "a"}, "at", (at, high)) == 1
    assert await count_after(collection, {"owner": "a"}, "at", (at - timedelta(seconds=2), low)) == 5


async def test_insert_new_stores_in_one_go_and_leaves_out_duplicates(collection):
    await collection.create_index([("owner", 1), ("source", 1)], unique=True)
    await collection.insert_one({"_id": ObjectId(), "owner": "b", "source": "s1"})
    docs = [{"_id": ObjectId(), "owner": owner, "source": "s1"} for owner in ("a", "b", "c")]
    stored = await insert_new(collection, docs)
    assert [d["owner"] for d in stored] == ["a", "c"]
    assert await collection.count_documents({"source": "s1"}) == 3
    assert await insert_new(collection, []) == []
    assert await insert_new(collection, [{"_id": ObjectId(), "owner": "a", "source": "s1"}]) == []
    # Anything but a duplicate is an error, not a silent skip.
    with pytest.raises(Exception):
        await insert_new(collection, [{"_id": ObjectId(), "owner": "d", "source": "s2"},
                                      {"_id": {"$bad": 1}, "owner": "e", "source": "s2"}])


async def test_insert_batch_tells_retries_from_refused_documents_by_position(collection):
    """One round trip: a duplicate on the named unique index is a retry, a duplicate key on
    any other index (here ``_id``) refuses that document only, the others are stored."""
    await collection.create_index([("owner", 1), ("key", 1)], unique=True, name="owner_key")
    stored = {"_id": ObjectId(), "owner": "a", "key": "k1"}
    await collection.insert_one(stored)
    docs = [{"_id": ObjectId(), "owner": "a", "key": "k0"},
            {"_id": ObjectId(), "owner": "a", "key": "k1"},  # a retry of the stored one
            {"_id": stored["_id"], "owner": "a", "key": "k2"},  # its _id is taken
            {"_id": ObjectId(), "owner": "b", "key": "k1"}]
    result = await insert_batch(collection, docs, "owner_key", ("owner", "key"))
    assert result.duplicates == {1}
    assert set(result.refused) == {2} and isinstance(result.refused[2], DocumentRefused)
    assert "duplicate key" in str(result.refused[2])
    held = {(d["owner"], d["key"]) for d in await collection.find({}).to_list(None)}
    assert held == {("a", "k0"), ("a", "k1"), ("b", "k1")}
    clean = await insert_batch(collection, [{"_id": ObjectId(), "owner": "c", "key": "k"}], "owner_key",
                               ("owner", "key"))
    assert clean.duplicates == frozenset() and clean.refused == {}
