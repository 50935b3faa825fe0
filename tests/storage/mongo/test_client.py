"""The driver-side timing of MongoDB data commands (reads and writes), as /metrics shows it."""
from __future__ import annotations

import uuid

import pytest

from storage.mongo.client import CommandTimer, create_mongo

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_data_commands_are_timed_as_reads_or_writes(settings):
    seen: list[tuple[str, str, float]] = []
    client, _ = create_mongo(settings, listeners=[CommandTimer(lambda *args: seen.append(args))])
    collection = client[f"timer_{uuid.uuid4().hex[:8]}"]["things"]
    try:
        await client.admin.command("ping")
        await collection.insert_one({"_id": 1})
        await collection.update_one({"_id": 1}, {"$set": {"n": 1}})
        assert await collection.find_one({"_id": 1}) == {"_id": 1, "n": 1}
        assert await collection.count_documents({}) == 1
        await collection.delete_one({"_id": 1})
        with pytest.raises(Exception):
            await collection.insert_one({"_id": {"$bad": 1}})  # a failed write is timed too
    finally:
        await collection.database.client.drop_database(collection.database.name)
        await client.close()
    kinds = [(kind, command) for kind, command, _ in seen]
    assert kinds[:5] == [("write", "insert"), ("write", "update"), ("read", "find"),
                         ("read", "aggregate"), ("write", "delete")]
    assert kinds[5] == ("write", "insert")
    assert ("read", "ping") not in kinds and all(kind in ("read", "write") for kind, _ in kinds)
    assert all(0 < seconds < 5 for _, _, seconds in seen)
