"""Group commit of sends (message_writes through MessagingService.send_message), on the
session's stores: what a batch costs MongoDB, duplicates within a batch and of earlier
messages, the store failing under a batch, one bad send among good ones, and order."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest
from bson import ObjectId
from pymongo import monitoring

from kernel.cursors import Cursors
from kernel.errors import StoreUnavailable, ValidationFailed
from server import appkeys
from server.services.membership_cache import MembershipCache
from server.services.message_writes import MessageWriter, NewMessage
from server.services.messaging import MessagingService, message_dict
from server.services.notifications import NotificationsService
from storage.mongo.client import READ_COMMANDS, WRITE_COMMANDS, create_mongo, ensure_indexes
from storage.mongo.values import DocumentRefused, mongo_now
from storage.embedded.processes import SECANTUS_URL_OPTIONS, ServerProcess, secantus_argv
from tests.server.services.ports import FixedPresence, RecordingPusher

pytestmark = pytest.mark.asyncio(loop_scope="session")


class CommandLog(monitoring.CommandListener):
    """The data commands a client sent (handshakes and pings left out)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in WRITE_COMMANDS | READ_COMMANDS:
            self.names.append(event.command_name)

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def service(server, db, pusher, presence=None, *, cached: bool = True) -> MessagingService:
    users = server.app[appkeys.SERVICES].users
    cursors = Cursors.random()
    return MessagingService(db, users, NotificationsService(db, users, pusher=pusher, cursors=cursors),
                            pusher=pusher, presence=presence, cursors=cursors,
                            membership=MembershipCache(lambda: 1) if cached else None)


@pytest.fixture
def pusher() -> RecordingPusher:
    return RecordingPusher()


@pytest.fixture
def messaging(server, pusher) -> MessagingService:
    return service(server, server.app[appkeys.MONGO_DB], pusher)


def pushed_ids(pusher: RecordingPusher) -> list[str]:
    return [data["message"]["id"] for _, name, data in pusher.pushed if name == "message:new"]


async def history_ids(messaging: MessagingService, user_id: str, conversation_id: str) -> list[str]:
    """Oldest first."""
    page = await messaging.history(user_id, conversation_id, limit=100, before=None)
    return [m["id"] for m in reversed(page["items"])]


async def test_sends_that_arrive_together_cost_one_insert_and_one_conversation_update(api, server, settings):
    commands = CommandLog()
    client, db = create_mongo(settings, listeners=[commands])
    try:
        a, b, c = [await api.register("gca") for _ in range(3)]
        pusher = RecordingPusher()
        messaging = service(server, db, pusher, FixedPresence({a.id, b.id, c.id}))
        first, _ = await messaging.create_conversation(a.id, [b.id, c.id], "one")
        second, _ = await messaging.create_conversation(b.id, [a.id, c.id], "two")
        for conv in (first, second):  # the members are read once, then cached
            await messaging.send_message(a.id, conv["id"], "warm", None)
        commands.names.clear()
        sends = [(sender, conv["id"]) for sender in (a, b, c) for conv in (first, second)] * 2
        results = await asyncio.gather(*(messaging.send_message(s.id, cid, f"m{i}", f"k{i}")
                                         for i, (s, cid) in enumerate(sends)))
        assert all(created for _, created in results)
        # One insert_many of the 12 messages, one bulk_write for both conversations.
        assert commands.names == ["insert", "update"], commands.names
        assert sorted(pushed_ids(pusher)[2:]) == sorted(m["id"] for m, _ in results)
        conv = await messaging.get_conversation(a.id, second["id"])
        # After a's last send there: b's and c's last ones.
        assert conv["last_message"]["id"] == results[-1][0]["id"] and conv["unread_count"] == 2
    finally:
        await client.close()


async def test_the_same_send_twice_in_one_batch_stores_one_message_that_both_get(api, messaging, pusher):
    a, b = await api.register("gcd"), await api.register("gcd")
    conv, _ = await messaging.create_conversation(a.id, [b.id])
    results = await asyncio.gather(messaging.send_message(a.id, conv["id"], "hello", "twice"),
                                   messaging.send_message(a.id, conv["id"], "hello", "twice"),
                                   messaging.send_message(a.id, conv["id"], "other", "once"))
    (one, created_one), (again, created_again), (other, created_other) = results
    assert created_one and not created_again and created_other and one == again
    assert await history_ids(messaging, b.id, conv["id"]) == [one["id"], other["id"]]
    assert pushed_ids(pusher) == [one["id"], other["id"]]
    assert (await messaging.get_conversation(b.id, conv["id"]))["unread_count"] == 2


async def test_a_retry_of_an_earlier_message_in_a_batch_gets_the_stored_message(api, messaging, pusher):
    a, b = await api.register("gcr"), await api.register("gcr")
    conv, _ = await messaging.create_conversation(a.id, [b.id])
    original, _ = await messaging.send_message(a.id, conv["id"], "first", "r-1")
    pusher.pushed.clear()
    (retried, created_retry), (new, created_new) = await asyncio.gather(
        messaging.send_message(a.id, conv["id"], "first (resent)", "r-1"),
        messaging.send_message(a.id, conv["id"], "second", "r-2"))
    assert not created_retry and retried == original  # the stored one, body and time included
    assert created_new
    assert await history_ids(messaging, b.id, conv["id"]) == [original["id"], new["id"]]
    assert pushed_ids(pusher) == [new["id"]]  # the original was pushed already
    assert (await messaging.get_conversation(b.id, conv["id"]))["unread_count"] == 2


async def test_a_send_refused_by_validation_does_not_fail_the_others_sent_with_it(api, messaging):
    a, b = await api.register("gcv"), await api.register("gcv")
    conv, _ = await messaging.create_conversation(a.id, [b.id])
    results = await asyncio.gather(messaging.send_message(a.id, conv["id"], "fine", "v-1"),
                                   messaging.send_message(a.id, conv["id"], "x" * 5000, "v-2"),
                                   messaging.send_message(a.id, conv["id"], "also fine", "v-3"),
                                   return_exceptions=True)
    assert isinstance(results[1], ValidationFailed)
    assert results[0][1] and results[2][1]
    assert await history_ids(messaging, a.id, conv["id"]) == [results[0][0]["id"], results[2][0]["id"]]


async def test_a_document_mongodb_refuses_fails_its_own_send_only(api, server, messaging):
    """A refused document (here: an _id already stored, a duplicate key on another index
    than the client id's) is not a retry: its send fails, the batch's others are stored."""
    a, b = await api.register("gcx"), await api.register("gcx")
    conv, _ = await messaging.create_conversation(a.id, [b.id])
    taken, _ = await messaging.send_message(a.id, conv["id"], "taken", "x-0")
    member_ids = tuple(await messaging.member_ids(conv["id"], a.id))
    writer = MessageWriter(messaging.messages_repo, messaging.conversations_repo, None)

    def new(oid: ObjectId, client_id: str) -> NewMessage:
        doc = {"_id": oid, "conversationId": conv["id"], "senderId": a.id, "body": client_id,
               "clientId": client_id, "createdAt": mongo_now()}
        return NewMessage(doc, ObjectId(conv["id"]), member_ids, {"message": message_dict(doc)})

    good, bad, also_good = (writer.store(new(ObjectId(), "x-1")), writer.store(new(ObjectId(taken["id"]), "x-2")),
                            writer.store(new(ObjectId(), "x-3")))
    outcomes = await asyncio.gather(good, bad, also_good, return_exceptions=True)
    assert isinstance(outcomes[1], DocumentRefused)
    assert outcomes[0].created and outcomes[2].created
    await asyncio.gather(outcomes[0].recorded, outcomes[2].recorded)
    assert (await messaging.history(a.id, conv["id"], limit=10, before=None))["items"][0]["client_id"] == "x-3"
    assert (await messaging.get_conversation(b.id, conv["id"]))["unread_count"] == 3


async def test_sends_of_one_conversation_keep_the_order_of_the_calls(api, messaging, pusher):
    """The first sends wait for the members to be read (cold cache), later ones find them
    cached: history and pushes still follow the order of the calls."""
    a, b = await api.register("gco"), await api.register("gco")
    conv, _ = await messaging.create_conversation(a.id, [b.id])
    messaging.forget_all_conversations()
    results = await asyncio.gather(*(messaging.send_message(a.id, conv["id"], f"#{i}", f"o-{i}")
                                     for i in range(25)))
    sent = [m["id"] for m, _ in results]
    assert [m["body"] for m, _ in results] == [f"#{i}" for i in range(25)]
    assert await history_ids(messaging, b.id, conv["id"]) == sent
    assert pushed_ids(pusher) == sent
    assert [m["created_at"] for m, _ in results] == sorted(m["created_at"] for m, _ in results)


class DiskSecantus(ServerProcess):
    """A SecantusDB of this test's own that keeps its data on disk across a restart (each
    commit synced: a killed server loses nothing it acknowledged)."""

    def __init__(self, path) -> None:
        super().__init__(lambda port: [*secantus_argv(port, path), "--sync-on-commit"])

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?{SECANTUS_URL_OPTIONS}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


async def test_a_batch_the_store_fails_under_fails_each_send_and_leaves_nothing_half_stored(
        api, server, settings, tmp_path):
    """MongoDB dies with a batch of sends in flight: each send gets the store's 503 (none
    hangs), none was pushed; once it is back, the same sends again (as clients retry)
    store each message once, record it once in the conversation and push it once —
    whether or not the dead server had written some of them."""
    mongo = DiskSecantus(tmp_path / "mongo").start()
    client, db = create_mongo(settings.replace(mongo_url=mongo.url, mongo_timeout_ms=500))
    try:
        await ensure_indexes(db, settings)
        a, b = await api.register("gcf"), await api.register("gcf")
        pusher = RecordingPusher()
        messaging = service(server, db, pusher, FixedPresence({a.id, b.id}))
        conv, _ = await messaging.create_conversation(a.id, [b.id])
        await messaging.send_message(a.id, conv["id"], "before", "f-0")  # members cached
        pusher.pushed.clear()
        sends = [messaging.send_message(a.id, conv["id"], f"m{i}", f"f-{i}") for i in range(1, 9)]
        inflight = asyncio.gather(*sends, return_exceptions=True)
        await asyncio.sleep(0)  # the batch's insert_many is on its way
        mongo.kill()
        outcomes = await asyncio.wait_for(inflight, 30)
        assert all(isinstance(o, StoreUnavailable) and o.status == 503 for o in outcomes), outcomes
        assert pushed_ids(pusher) == []

        mongo.start()
        retried = []
        for i in range(1, 9):
            for _ in range(40):  # the driver finds the server again by itself
                try:
                    retried.append(await messaging.send_message(a.id, conv["id"], f"m{i}", f"f-{i}"))
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.25)
        ids = [m["id"] for m, _ in retried]
        assert [m["body"] for m, _ in retried] == [f"m{i}" for i in range(1, 9)]
        history = await history_ids(messaging, b.id, conv["id"])
        assert history[1:] == ids  # each once, in order
        doc = await db["conversations"].find_one({"_id": ObjectId(conv["id"])})
        assert len(doc["recent"]) == 9 and len({e["key"] for e in doc["recent"]}) == 9
        assert str(doc["lastMessage"]["_id"]) == ids[-1]
        assert sorted(pushed_ids(pusher)) == sorted(ids)
    finally:
        await client.close()
        mongo.kill()


async def test_offline_members_of_sends_written_together_are_notified_in_one_write(api, server, settings):
    commands = CommandLog()
    client, db = create_mongo(settings, listeners=[commands])
    try:
        a, b, away = [await api.register("gcn") for _ in range(3)]
        pusher = RecordingPusher()
        messaging = service(server, db, pusher, FixedPresence({a.id, b.id}))
        conv, _ = await messaging.create_conversation(a.id, [b.id, away.id], "g")
        await messaging.send_message(b.id, conv["id"], "warm", None)
        commands.names.clear()
        pusher.pushed.clear()
        results = await asyncio.gather(*(messaging.send_message(s.id, conv["id"], f"n{i}", f"n-{i}")
                                         for i, s in enumerate((a, b, a, b))))
        assert sorted(commands.names) == ["insert", "insert", "update"], commands.names  # messages, notices
        notices = [(ids, data["notification"]) for ids, name, data in pusher.pushed if name == "notification:new"]
        assert [ids for ids, _ in notices] == [[away.id]] * 4
        names = {a.id: a.user["display_name"], b.id: b.user["display_name"]}
        assert sorted(n["message"] for _, n in notices) == sorted(
            f"New message from {names[m['sender_id']]}" for m, _ in results)
        assert sorted(n["metadata"]["actor_id"] for _, n in notices) == sorted([a.id, a.id, b.id, b.id])
        assert {n["metadata"]["conversation_id"] for _, n in notices} == {conv["id"]}
        assert len({m["id"] for m, _ in results}) == 4
    finally:
        await client.close()
