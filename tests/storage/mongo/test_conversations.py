"""The conversation's conditional updates: the last message and read positions only move
forward, whatever order concurrent sends arrive in, without an $or scan."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from storage.mongo.conversations import ConversationsRepo
from storage.mongo.values import mongo_now, order_key

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def repo(settings):
    client = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    db = client[f"conversations_{uuid.uuid4().hex[:8]}"]
    yield ConversationsRepo(db)
    await client.drop_database(db.name)
    await client.close()


def message(at, oid=None):
    return {"_id": oid or ObjectId(), "conversationId": "c", "senderId": "a", "body": "hi",
            "clientId": uuid.uuid4().hex, "createdAt": at}


async def new_conversation(repo, at) -> ObjectId:
    oid = ObjectId()
    await repo.insert({"_id": oid, "kind": "group", "memberIds": ["a", "b"], "createdAt": at,
                       "lastActivityAt": at, "lastMessage": None, "reads": {}})
    return oid


async def test_order_key_sorts_like_the_pair():
    at = mongo_now()
    low, high = ObjectId("0" * 24), ObjectId("f" * 24)
    pairs = [(at, high), (at + timedelta(milliseconds=1), low), (at, low),
             (at + timedelta(days=400), low), (at - timedelta(microseconds=1000), high)]
    assert sorted(pairs) == sorted(pairs, key=lambda p: order_key(*p))


async def test_last_message_only_moves_forward(repo):
    at = mongo_now()
    cid = await new_conversation(repo, at)
    first = message(at + timedelta(milliseconds=5))
    later = message(at + timedelta(milliseconds=9))
    await repo.record_message(cid, later)
    await repo.record_message(cid, first)  # arrived late: ignored
    doc = await repo.get_for_member(cid, "a")
    assert doc["lastMessage"]["_id"] == later["_id"] and doc["lastActivityAt"] == later["createdAt"]
    # Same millisecond: the larger id is the later one.
    same_low = message(later["createdAt"], ObjectId("0" * 24))
    same_high = message(later["createdAt"], ObjectId("f" * 24))
    await repo.record_message(cid, same_high)
    await repo.record_message(cid, same_low)
    assert (await repo.get_for_member(cid, "a"))["lastMessage"]["_id"] == same_high["_id"]


async def test_a_conversation_stored_without_keys_still_never_moves_back(repo):
    at = mongo_now()
    cid = await new_conversation(repo, at + timedelta(seconds=10))  # activity after the message
    await repo.record_message(cid, message(at))
    assert (await repo.get_for_member(cid, "a"))["lastActivityAt"] == at + timedelta(seconds=10)
    # An old read position without a key is not moved back past its moment.
    await repo.collection.update_one({"_id": cid}, {"$set": {"reads.b": {"messageId": ObjectId(), "at": at}}})
    assert not await repo.advance_read(cid, "b", ObjectId(), at - timedelta(seconds=1))
    assert await repo.advance_read(cid, "b", ObjectId(), at + timedelta(seconds=1))


async def test_read_position_only_moves_forward_and_only_for_members(repo):
    at = mongo_now()
    cid = await new_conversation(repo, at)
    second, first = ObjectId(), ObjectId()
    assert await repo.advance_read(cid, "b", second, at + timedelta(milliseconds=2))
    assert not await repo.advance_read(cid, "b", first, at + timedelta(milliseconds=1))
    assert not await repo.advance_read(cid, "b", second, at + timedelta(milliseconds=2))  # same: no move
    assert not await repo.advance_read(cid, "stranger", second, at + timedelta(milliseconds=3))
    doc = await repo.get_for_member(cid, "b")
    assert doc["reads"]["b"]["messageId"] == second and "stranger" not in doc["reads"]


async def test_a_sent_message_updates_last_message_and_read_position_in_one_write(repo):
    at = mongo_now()
    cid = await new_conversation(repo, at)
    sent = {**message(at + timedelta(milliseconds=3)), "senderId": "b"}
    assert await repo.record_sent_message(cid, sent)
    doc = await repo.get_for_member(cid, "b")
    assert doc["lastMessage"]["_id"] == sent["_id"] and doc["reads"]["b"]["messageId"] == sent["_id"]
    # Not the newest any more (a later message is last): nothing is written in one go, and
    # each part is left to its own conditional update.
    later = {**message(at + timedelta(milliseconds=9)), "senderId": "a"}
    await repo.record_message(cid, later)
    older = {**message(at + timedelta(milliseconds=5)), "senderId": "b"}
    assert not await repo.record_sent_message(cid, older)
    doc = await repo.get_for_member(cid, "b")
    assert doc["lastMessage"]["_id"] == later["_id"] and doc["reads"]["b"]["messageId"] == sent["_id"]
    assert not await repo.record_sent_message(cid, {**message(at + timedelta(seconds=1)), "senderId": "stranger"})


async def test_recent_messages_hold_the_newest_once_each_whatever_the_order(settings):
    """Unread counts are read from ``recent``: the newest ``recent_max`` messages, each once,
    though concurrent sends arrive out of order and retries record a message again."""
    client = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    db = client[f"conversations_{uuid.uuid4().hex[:8]}"]
    try:
        repo = ConversationsRepo(db, recent_max=5)
        at = mongo_now()
        cid = ObjectId()
        await repo.insert({"_id": cid, "kind": "group", "memberIds": ["a", "b"], "createdAt": at,
                           "lastActivityAt": at, "lastMessage": None, "reads": {}, "recent": [],
                           "recentFromStart": True})
        messages = [{**message(at + timedelta(milliseconds=i)), "senderId": "ab"[i % 2]} for i in range(12)]
        arrival = messages[6:] + messages[:6][::-1] + messages[3:9]  # late ones, then retries
        for m in arrival:  # as MessagingService._after_store records a stored message
            if not await repo.record_sent_message(cid, m):
                await repo.record_message(cid, m)
        doc = await repo.get_for_member(cid, "a")
        assert [e["key"] for e in doc["recent"]] == [order_key(m["createdAt"], m["_id"]) for m in messages[-5:]]
        # Erasing a member takes their messages out of everyone's unread counts.
        await repo.remove_member("a")
        doc = await repo.collection.find_one({"_id": cid})
        assert doc["recent"] and all(e["senderId"] != "a" for e in doc["recent"])
    finally:
        await client.drop_database(db.name)
        await client.close()


class UpdateCommands(monitoring.CommandListener):
    """How many ``update`` commands a client sent (one per bulk_write)."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update":
            self.count += 1

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


@pytest.fixture
async def counted(settings):
    """A repo whose client counts its update commands."""
    updates = UpdateCommands()
    client = AsyncMongoClient(settings.mongo_url, tz_aware=True, event_listeners=[updates])
    db = client[f"conversations_{uuid.uuid4().hex[:8]}"]
    yield ConversationsRepo(db, recent_max=6), updates
    await client.drop_database(db.name)
    await client.close()


async def group(repo, at, members=("a", "b", "c")) -> ObjectId:
    oid = ObjectId()
    await repo.insert({"_id": oid, "kind": "group", "memberIds": list(members), "createdAt": at,
                       "lastActivityAt": at, "lastMessage": None, "reads": {}, "recent": [], "recentFromStart": True})
    return oid


def sent(at, ms, sender):
    return {**message(at + timedelta(milliseconds=ms)), "senderId": sender}


def keys(messages):
    return [order_key(m["createdAt"], m["_id"]) for m in messages]


async def test_a_batch_of_new_messages_is_recorded_with_one_update_per_conversation(counted):
    repo, updates = counted
    at = mongo_now()
    first, second = await group(repo, at), await group(repo, at)
    ones = [sent(at, 1, "a"), sent(at, 2, "b"), sent(at, 3, "a"), sent(at, 4, "b")]
    twos = [sent(at, 5, "c")]
    await repo.record_new_messages({first: ones[::-1], second: twos})  # any order within a conversation
    assert updates.count == 1
    doc = await repo.collection.find_one({"_id": first})
    assert doc["lastMessage"]["_id"] == ones[-1]["_id"] and doc["lastMessageKey"] == keys(ones)[-1]
    assert doc["lastActivityAt"] == ones[-1]["createdAt"]
    assert doc["reads"]["a"]["messageId"] == ones[2]["_id"] and doc["reads"]["b"]["messageId"] == ones[3]["_id"]
    assert [e["key"] for e in doc["recent"]] == keys(ones) and "c" not in doc["reads"]
    doc = await repo.collection.find_one({"_id": second})
    assert doc["lastMessage"]["_id"] == twos[0]["_id"] and [e["key"] for e in doc["recent"]] == keys(twos)


async def test_batches_of_two_instances_interleave_without_a_second_round_trip(counted):
    """Instance B's batch holds the newest message and lands first; instance A's, older but
    overlapping in time, lands after it: the last message stays B's newest, and every
    message is among the recent ones once, in key order."""
    repo, updates = counted
    at = mongo_now()
    cid = await group(repo, at)
    from_a = [sent(at, 1, "a"), sent(at, 4, "a")]
    from_b = [sent(at, 2, "b"), sent(at, 5, "b")]
    await repo.record_new_messages({cid: from_b})
    await repo.record_new_messages({cid: from_a})
    assert updates.count == 2
    doc = await repo.collection.find_one({"_id": cid})
    assert doc["lastMessage"]["_id"] == from_b[-1]["_id"] and doc["lastActivityAt"] == from_b[-1]["createdAt"]
    assert [e["key"] for e in doc["recent"]] == keys(sorted(from_a + from_b, key=lambda m: m["createdAt"]))
    assert doc["reads"]["a"]["messageId"] == from_a[-1]["_id"] and doc["reads"]["b"]["messageId"] == from_b[-1]["_id"]
    # The newest ``recent_max`` are kept.
    more = [sent(at, 10 + i, "c") for i in range(5)]
    await repo.record_new_messages({cid: more})
    doc = await repo.collection.find_one({"_id": cid})
    assert [e["key"] for e in doc["recent"]] == keys([from_b[-1], *more])


async def test_a_message_a_retry_recorded_meanwhile_is_recorded_once(counted):
    """A retried send recorded one of the batch's messages on its own (the first attempt's
    batch was still on its way): the batch's update does not match, and the second round
    trip adds the others, each once."""
    repo, updates = counted
    at = mongo_now()
    cid = await group(repo, at)
    batch = [sent(at, 1, "a"), sent(at, 2, "b"), sent(at, 3, "a")]
    assert await repo.record_sent_message(cid, batch[1])  # the retry of the middle one
    updates.count = 0
    await repo.record_new_messages({cid: batch})
    assert updates.count == 2
    doc = await repo.collection.find_one({"_id": cid})
    assert [e["key"] for e in doc["recent"]] == keys(batch)
    assert doc["lastMessage"]["_id"] == batch[-1]["_id"]
    assert doc["reads"]["a"]["messageId"] == batch[-1]["_id"] and doc["reads"]["b"]["messageId"] == batch[1]["_id"]


async def test_a_read_position_further_on_is_not_moved_back_by_a_batch(counted):
    repo, _ = counted
    at = mongo_now()
    cid = await group(repo, at)
    later = sent(at, 50, "b")
    assert await repo.advance_read(cid, "a", later["_id"], later["createdAt"])  # "a" read on further
    batch = [sent(at, 1, "a"), sent(at, 2, "c")]
    await repo.record_new_messages({cid: batch})
    doc = await repo.collection.find_one({"_id": cid})
    assert doc["reads"]["a"]["messageId"] == later["_id"] and doc["reads"]["c"]["messageId"] == batch[1]["_id"]
    assert [e["key"] for e in doc["recent"]] == keys(batch) and doc["lastMessage"]["_id"] == batch[-1]["_id"]


async def test_a_last_message_stored_before_its_time_led_is_replaced_by_a_newer_one(counted):
    repo, _ = counted
    at = mongo_now()
    cid = await group(repo, at)
    old = sent(at, 1, "a")
    await repo.collection.update_one({"_id": cid}, {"$set": {"lastMessage": old, "lastMessageKey": keys([old])[0]}})
    new = sent(at, 2, "b")
    await repo.record_new_messages({cid: [new]})
    doc = await repo.collection.find_one({"_id": cid})
    assert doc["lastMessage"]["_id"] == new["_id"] and doc["lastMessageKey"] == keys([new])[0]
    # And an older message never replaces a newer keyed one.
    await repo.record_new_messages({cid: [sent(at, -5, "c")]})
    assert (await repo.collection.find_one({"_id": cid}))["lastMessage"]["_id"] == new["_id"]
    # Same millisecond: the larger id is the later one, whichever batch lands first.
    same_high = {**message(new["createdAt"] + timedelta(milliseconds=1), ObjectId("f" * 24)), "senderId": "a"}
    same_low = {**message(same_high["createdAt"], ObjectId("0" * 24)), "senderId": "b"}
    await repo.record_new_messages({cid: [same_high]})
    await repo.record_new_messages({cid: [same_low]})
    doc = await repo.collection.find_one({"_id": cid})
    assert doc["lastMessage"]["_id"] == same_high["_id"] and doc["lastMessageKey"] == keys([same_high])[0]
