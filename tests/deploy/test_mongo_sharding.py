"""deploy/mongo/shard-collections.js, checked without a sharded cluster: it shards exactly
the collections storage/mongo/ names a shard key for, with that key, and every index the
app creates suits its collection's key (a sharded cluster refuses a unique index that does
not start with the shard key, and needs an index that does)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kernel.settings import Settings
from storage.mongo.indexes import SHARD_KEYS, indexes_for

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "mongo" / "shard-collections.js"


def js_object(text: str) -> dict:
    """A flat JS object literal of the script ({ a: 1, b: -1 }) as a dict, in order."""
    return json.loads(re.sub(r"([{,]\s*)([A-Za-z_$][\w$]*)\s*:", r'\1"\2":', text))


def script_calls(name: str) -> list[tuple[str, str]]:
    code = "\n".join(line.split("//")[0] for line in SCRIPT.read_text().splitlines())
    return re.findall(rf"{re.escape(name)}\((.*?)\);", code)


def sharded_by_script() -> dict[str, dict]:
    found = {}
    for call in script_calls("sh.shardCollection"):
        target, key = re.fullmatch(r"`\$\{database\}\.(\w+)`,\s*(\{.*\})", call.strip()).groups()
        found[target] = js_object(key)
    return found


def test_the_script_shards_each_collection_by_its_key():
    assert sharded_by_script() == {c: key for c, key in SHARD_KEYS.items() if key is not None}
    assert script_calls("sh.enableSharding") == ["database"]


def test_the_script_s_indexes_are_the_app_s():
    """The indexes the script creates before sharding are the app's, with the same keys
    and names (else the app's createIndexes at start would conflict)."""
    app = {(c, options["name"]): dict(keys) for c, keys, options in indexes_for(Settings())}
    created = script_calls("db.messages.createIndex") + script_calls("db.notifications.createIndex")
    assert created
    for collection in ("messages", "notifications"):
        for call in script_calls(f"db.{collection}.createIndex"):
            keys, options = re.fullmatch(r"(\{.*?\}),\s*(\{.*\})", call.strip()).groups()
            name = js_object(options)["name"]
            assert app[(collection, name)] == js_object(keys), (collection, name)


def starts_with(keys: list[tuple[str, int]], shard_key: dict[str, int]) -> bool:
    return keys[: len(shard_key)] == list(shard_key.items())


@pytest.mark.parametrize("collection", [c for c, key in SHARD_KEYS.items() if key is not None])
def test_every_index_suits_the_shard_key(collection):
    shard_key = SHARD_KEYS[collection]
    indexes = [(keys, options) for c, keys, options in indexes_for(Settings()) if c == collection]
    unique = [(keys, options["name"]) for keys, options in indexes if options.get("unique")]
    assert all(starts_with(keys, shard_key) for keys, _ in unique), unique
    assert any(starts_with(keys, shard_key) for keys, _ in indexes), "no index supports the shard key"
    # The key's fields are plain ascending (ranged): unique indexes are not allowed on hashed keys.
    assert set(shard_key.values()) == {1}


def test_unsharded_collections_are_named_with_a_reason():
    assert set(SHARD_KEYS) == {"messages", "notifications", "conversations", "notification_contributions"}
    assert SHARD_KEYS["conversations"] is None
    assert "conversations: not sharded" in SCRIPT.read_text().lower()
