"""What messaging pushes through the real-time port, and the ``message`` notifications
for recipients with no connected socket (the socket layer's entry points included)."""
from __future__ import annotations

import asyncio

import orjson
import pytest
from bson import ObjectId
from pymongo import monitoring

from kernel.cursors import Cursors
from kernel.errors import NotFound, StoreUnavailable, ValidationFailed
from server import appkeys
from server.services.messaging import MessagingService
from server.services.notifications import NotificationsService
from storage.mongo.client import READ_COMMANDS, WRITE_COMMANDS, create_mongo
from storage.redis.offset_log import START_OF_LOG
from tests.server.services.ports import FailingOncePusher, FixedPresence, RecordingPusher

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def pusher() -> RecordingPusher:
    return RecordingPusher()


@pytest.fixture
def presence() -> FixedPresence:
    return FixedPresence(set())


@pytest.fixture
def messaging(server, pusher, presence) -> MessagingService:
    mongo, users = server.app[appkeys.MONGO_DB], server.app[appkeys.SERVICES].users
    cursors = Cursors.random()
    notifications = NotificationsService(mongo, users, pusher=pusher, cursors=cursors)
    return MessagingService(mongo, users, notifications, pusher=pusher, presence=presence, cursors=cursors)


async def notification_types(api, acct) -> list[str]:
    """Types of the account's notifications, less the welcome the bus delivers."""
    items = (await api.request("GET", "/notifications", token=acct.token))[1]["items"]
    return [n["type"] for n in items if n["type"] != "welcome"]


async def test_send_pushes_to_every_member_and_notifies_offline_ones(api, messaging, pusher, presence):
    a, b, c = [await api.register(p) for p in ("pa", "pb", "pc")]
    presence.connected = {a.id, b.id}
    group, created = await messaging.create_conversation(a.id, [b.id, c.id], "G")
    assert created
    message, created = await messaging.send_message(a.id, group["id"], "hello", "c-1")
    assert created and message["body"] == "hello" and message["client_id"] == "c-1"

    new = [(ids, data) for ids, name, data in pusher.pushed if name == "message:new"]
    assert new == [(group["member_ids"], {"message": message})]
    notes = [(ids, data["notification"]) for ids, name, data in pusher.pushed if name == "notification:new"]
    assert len(notes) == 1 and notes[0][0] == [c.id]
    assert notes[0][1]["type"] == "message"
    assert notes[0][1]["metadata"] == {"actor_id": a.id, "conversation_id": group["id"]}
    assert await notification_types(api, c) == ["message"]
    assert await notification_types(api, b) == [] and await notification_types(api, a) == []

    # A retry returns the stored message and pushes or notifies nothing more.
    pusher.pushed.clear()
    again, created = await messaging.send_message(a.id, group["id"], "hello", "c-1")
    assert not created and again == message and pusher.pushed == []
    assert await notification_types(api, c) == ["message"]


async def test_concurrent_socket_retries_store_one(api, messaging, pusher):
    a, b = await api.register("sa"), await api.register("sb")
    conv, _ = await messaging.create_conversation(a.id, [b.id])
    results = await asyncio.gather(*(messaging.send_message(a.id, conv["id"], "x", "same") for _ in range(6)))
    assert [created for _, created in results].count(True) == 1
    assert len({m["id"] for m, _ in results}) == 1
    assert len([1 for _, name, _ in pusher.pushed if name == "message:new"]) == 1
    assert await notification_types(api, b) == ["message"]


async def test_read_pushes_receipt_to_the_other_members_once(api, messaging, pusher):
    a, b, c = [await api.register(p) for p in ("ra", "rb", "rc")]
    group, _ = await messaging.create_conversation(a.id, [b.id, c.id])
    first, _ = await messaging.send_message(a.id, group["id"], "one", "r-1")
    second, _ = await messaging.send_message(a.id, group["id"], "two", "r-2")
    pusher.pushed.clear()
    position = await messaging.mark_read(b.id, group["id"], second["id"])
    assert position == {"conversation_id": group["id"], "last_read_message_id": second["id"]}
    assert pusher.pushed == [(
        [a.id, c.id], "message:read", {"conversation_id": group["id"], "user_id": b.id, "message_id": second["id"]})]
    # Not moving (an older or the same message) tells nobody anything.
    pusher.pushed.clear()
    assert (await messaging.mark_read(b.id, group["id"], first["id"]))["last_read_message_id"] == second["id"]
    assert (await messaging.mark_read(b.id, group["id"], second["id"]))["last_read_message_id"] == second["id"]
    assert pusher.pushed == []


async def test_socket_entry_points_refuse_non_members_and_bad_input(api, messaging, pusher):
    a, b, outsider = [await api.register(p) for p in ("ea", "eb", "eo")]
    conv, _ = await messaging.create_conversation(a.id, [b.id])
    assert sorted(await messaging.member_ids(conv["id"], b.id)) == sorted([a.id, b.id])
    for bad in (outsider.id, "nobody"):
        with pytest.raises(NotFound):
            await messaging.member_ids(conv["id"], bad)
    with pytest.raises(NotFound):
        await messaging.member_ids("not-an-id", a.id)
    with pytest.raises(NotFound):
        await messaging.send_message(outsider.id, conv["id"], "hi", "o-1")
    for body, client_id in [("", "k"), (None, "k"), ("x" * 4001, "k"), ("ok", ""), ("ok", 5)]:
        with pytest.raises(ValidationFailed):
            await messaging.send_message(a.id, conv["id"], body, client_id)
    with pytest.raises(ValidationFailed):
        await messaging.mark_read(a.id, conv["id"], None)
    assert pusher.pushed == []
    history = await messaging.history(a.id, conv["id"], limit=10, before=None)
    assert history["items"] == []


async def test_typing_goes_live_to_the_other_members_only(api, messaging, pusher):
    a, b, c, outsider = [await api.register(p) for p in ("ta", "tb", "tc", "to")]
    group, _ = await messaging.create_conversation(a.id, [b.id, c.id])
    await messaging.typing(b.id, group["id"], True)
    assert pusher.pushed == [([a.id, c.id], "typing", {"conversation_id": group["id"], "user_id": b.id, "typing": True})]
    pusher.pushed.clear()
    with pytest.raises(NotFound):
        await messaging.typing(outsider.id, group["id"], True)
    with pytest.raises(NotFound):
        await messaging.typing(a.id, "not-an-id", False)
    assert pusher.pushed == []


async def test_typing_is_never_replayed_and_a_failed_push_is_the_callers_answer(api, server):
    messaging, flaky = messaging_with_a_failing_push(server, "typing")
    a, b = await api.register("tf"), await api.register("tg")
    conv, _ = await messaging.create_conversation(a.id, [b.id])
    # Nothing is stored that a retry would repair: the failure reaches the socket's ack.
    with pytest.raises(StoreUnavailable):
        await messaging.typing(a.id, conv["id"], True)
    assert not flaky.armed
    await messaging.typing(a.id, conv["id"], True)
    entries = await server.app[appkeys.PUSHER].offset_log.read_after(b.id, START_OF_LOG)
    assert [e.event for e in entries if e.event == "typing"] == []


async def test_without_pusher_or_presence_messages_are_still_stored_and_notified(api, server):
    services = server.app[appkeys.SERVICES]
    a, b = await api.register("na"), await api.register("nb")
    cursors = Cursors.random()
    bare = MessagingService(server.app[appkeys.MONGO_DB], services.users,
                            NotificationsService(server.app[appkeys.MONGO_DB], services.users, cursors=cursors),
                            cursors=cursors)
    conv, _ = await bare.create_conversation(a.id, [b.id])
    message, created = await bare.send_message(a.id, conv["id"], "quiet", "q-1")
    assert created
    assert (await bare.get_conversation(b.id, conv["id"]))["last_message"] == message
    assert await notification_types(api, b) == ["message"]


async def log_messages(server, user_id: str) -> list[str]:
    """Message ids of the ``message:new`` entries in the user's offset log, in order."""
    entries = await server.app[appkeys.PUSHER].offset_log.read_after(user_id, START_OF_LOG)
    return [orjson.loads(e.data_json)["message"]["id"] for e in entries if e.event == "message:new"]


def messaging_with_a_failing_push(server, event: str = "message:new") -> tuple[MessagingService, FailingOncePusher]:
    """A messaging service on the session's stores whose first push of ``event`` fails."""
    services = server.app[appkeys.SERVICES]
    flaky = FailingOncePusher(server.app[appkeys.PUSHER], event)
    mongo = server.app[appkeys.MONGO_DB]
    notifications = NotificationsService(mongo, services.users, cursors=Cursors.random())
    return MessagingService(mongo, services.users, notifications, pusher=flaky, cursors=Cursors.random()), flaky


async def test_a_message_whose_push_failed_reaches_the_logs_on_the_retried_send_once(api, server):
    messaging, flaky = messaging_with_a_failing_push(server)
    a, b = await api.register("fa"), await api.register("fb")
    conv, _ = await messaging.create_conversation(a.id, [b.id])
    message, created = await messaging.send_message(a.id, conv["id"], "lost push", "f-1")
    assert created and not flaky.armed  # stored, and the push did fail
    assert await log_messages(server, a.id) == [] and await log_messages(server, b.id) == []

    again, created = await messaging.send_message(a.id, conv["id"], "lost push", "f-1")
    assert not created and again == message
    assert await log_messages(server, a.id) == [message["id"]]
    assert await log_messages(server, b.id) == [message["id"]]
    # Pushed now: further retries, also concurrent ones, append nothing.
    await asyncio.gather(*(messaging.send_message(a.id, conv["id"], "lost push", "f-1") for _ in range(4)))
    assert await log_messages(server, b.id) == [message["id"]]


async def test_concurrent_retries_of_an_unpushed_message_append_it_once(api, server):
    """The first attempt's push failed; retries racing each other (all seeing it
    unpushed) push it once: the append is keyed on the message id in Redis."""
    messaging, _ = messaging_with_a_failing_push(server)
    a, b, c = [await api.register(p) for p in ("ga", "gb", "gc")]
    group, _ = await messaging.create_conversation(a.id, [b.id, c.id])
    message, _ = await messaging.send_message(a.id, group["id"], "once", "g-1")
    await asyncio.gather(*(messaging.send_message(a.id, group["id"], "once", "g-1") for _ in range(6)))
    for member in (a, b, c):
        assert await log_messages(server, member.id) == [message["id"]]


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


async def test_listing_conversations_costs_the_same_however_many_messages_they_hold(api, server, settings):
    """A page of conversations is one query (two after the first page): unread counts
    come from the conversations themselves, not from counting their messages."""
    commands = CommandLog()
    client, db = create_mongo(settings, listeners=[commands])
    try:
        users = server.app[appkeys.SERVICES].users
        cursors = Cursors.random()
        listing = MessagingService(db, users, NotificationsService(db, users, cursors=cursors), cursors=cursors)
        me, other = await api.register("lcm"), await api.register("lco")
        sender = server.app[appkeys.SERVICES].messaging
        convs = [(await sender.create_conversation(other.id, [me.id, third], f"g{i}"))[0]
                 for i, third in enumerate([(await api.register("lct")).id for _ in range(3)])]

        async def list_calls() -> tuple[list[int], list[int]]:
            counts, sizes = [], []
            cursor = None
            while True:
                commands.names.clear()
                page = await listing.list_conversations(me.id, limit=2, cursor=cursor)
                counts.append(len(commands.names))
                sizes.append(sum(c["unread_count"] for c in page["items"]))
                cursor = page["next_cursor"]
                if cursor is None:
                    return counts, sizes

        for conv in convs:
            await sender.send_message(other.id, conv["id"], "first", None)
        few, few_unread = await list_calls()
        for conv in convs:
            await asyncio.gather(*(sender.send_message(other.id, conv["id"], f"m{i}", None) for i in range(60)))
        many, many_unread = await list_calls()
        assert few == many == [1, 2], (few, many)  # the first page one find, the next the keyset pair
        assert sum(few_unread) == 3 and sum(many_unread) == 3 * 61
    finally:
        await client.close()


async def test_a_conversation_stored_before_recent_messages_were_kept_counts_the_old_way(api, server, settings):
    """Conversations stored before ``recent`` existed count their messages, capped too."""
    users = server.app[appkeys.SERVICES].users
    cursors = Cursors.random()
    mongo = server.app[appkeys.MONGO_DB]
    messaging = MessagingService(mongo, users, NotificationsService(mongo, users, cursors=cursors), cursors=cursors,
                                 unread_count_max=3)
    me, other = await api.register("old"), await api.register("olo")
    conv, _ = await messaging.create_conversation(other.id, [me.id])
    oid = ObjectId(conv["id"])
    await mongo["conversations"].update_one({"_id": oid}, {"$unset": {"recent": "", "recentFromStart": ""}})
    for i in range(5):
        await messaging.send_message(other.id, conv["id"], f"m{i}", None)
    assert (await messaging.get_conversation(me.id, conv["id"]))["unread_count"] == 3
    assert (await messaging.get_conversation(other.id, conv["id"]))["unread_count"] == 0
