"""Every query and update the chat and notification paths send to a sharded collection
carries the collection's shard key (storage/mongo: SHARD_KEY), so a sharded cluster
routes it to one shard instead of asking them all. Driven through the real app: sends
(REST and retried), history pages, read positions, conversation lists and views,
notifications of messages to offline members, their list, count and marks; a command listener on the app's client sees what goes on the wire."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from storage.mongo.indexes import SHARD_KEYS
from tests.helpers.app import own_namespaces
from tests.helpers.waiting import eventually
from tests.mongo_commands import CommandRecorder

pytestmark = pytest.mark.asyncio(loop_scope="session")

SHARDED = {collection: key for collection, key in SHARD_KEYS.items() if key is not None}


def filters(name: str, command: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(collection, filter or inserted document) of each operation in a data command."""
    collection = command.get(name)
    if name == "find":
        yield collection, command.get("filter", {})
    elif name == "update":
        yield from ((collection, u["q"]) for u in command["updates"])
    elif name == "delete":
        yield from ((collection, d["q"]) for d in command["deletes"])
    elif name == "findAndModify":
        yield collection, command.get("query", {})
    elif name in ("count", "distinct"):
        yield collection, command.get("query", {})
    elif name == "aggregate":
        first = (command.get("pipeline") or [{}])[0]
        yield collection, first.get("$match", {})
    elif name == "insert":
        yield from ((collection, doc) for doc in command["documents"])


def targets(value: Any) -> bool:
    """An equality (or a short $in) on the key: routable to the shard(s) holding it."""
    if isinstance(value, dict):
        return set(value) == {"$eq"} or set(value) == {"$in"}
    return value is not None


async def test_chat_and_notification_commands_carry_their_shard_key(start_app, make_amqp_vhost):
    overrides = own_namespaces(make_amqp_vhost, "shardkeys")
    recorder = CommandRecorder.installed(overrides["mongo_db"])
    recorder.recording = True
    async with start_app(**overrides) as api:
        a, b, c = await api.register("ska"), await api.register("skb"), await api.register("skc")
        status, direct, _ = await api.request("POST", "/conversations", token=a.token, json={"member_ids": [b.id]})
        assert status == 201
        status, again, _ = await api.request("POST", "/conversations", token=b.token, json={"member_ids": [a.id]})
        assert status == 200 and again["id"] == direct["id"]
        status, group, _ = await api.request("POST", "/conversations", token=a.token,
                                             json={"member_ids": [b.id, c.id], "title": "three"})
        assert status == 201
        sent = []
        for conv in (direct, group):
            for i in range(3):
                status, msg, _ = await api.request("POST", f"/conversations/{conv['id']}/messages", token=a.token,
                                                   json={"body": f"m{i}", "client_id": f"{conv['id']}-{i}"})
                assert status == 201
                sent.append(msg)
        status, retried, _ = await api.request("POST", f"/conversations/{direct['id']}/messages", token=a.token,
                                               json={"body": "m0", "client_id": f"{direct['id']}-0"})
        assert status == 200 and retried["id"] == sent[0]["id"]
        path = f"/conversations/{group['id']}/messages"
        status, newest, _ = await api.request("GET", f"{path}?limit=2", token=c.token)
        assert status == 200 and newest["next_cursor"]
        status, older, _ = await api.request("GET", f"{path}?limit=2&before={newest['next_cursor']}", token=c.token)
        assert status == 200 and older["items"]
        status, _, _ = await api.request("POST", f"/conversations/{group['id']}/read", token=c.token,
                                         json={"message_id": newest["items"][0]["id"]})
        assert status == 200
        for user in (a, b, c):
            status, listed, _ = await api.request("GET", "/conversations", token=user.token)
            assert status == 200 and listed["items"]
        status, _, _ = await api.request("GET", f"/conversations/{group['id']}", token=b.token)
        assert status == 200
        # B and C hold no socket: A's messages notified them, in the send itself (no domain
        # event: this instance shares the session's outbox with the session's app).

        async def notified():
            status, listed, _ = await api.request("GET", "/notifications", token=b.token)
            return status == 200 and listed["items"]

        items = await eventually(notified)
        status, unread_only, _ = await api.request("GET", "/notifications?unread=true", token=c.token)
        assert status == 200 and unread_only["items"]
        for user in (b, c):
            status, _, _ = await api.request("GET", "/notifications/unread-count", token=user.token)
            assert status == 200
        status, _, _ = await api.request("POST", f"/notifications/{items[0]['id']}/read", token=b.token)
        assert status == 200
        status, _, _ = await api.request("POST", "/notifications/read-all", token=c.token)
        assert status == 200
        recorder.recording = False

    checked: dict[str, set[str]] = {collection: set() for collection in SHARDED}
    scattered = []
    for name, command in recorder.commands:
        for collection, where in filters(name, command):
            if collection not in SHARDED:
                continue
            checked[collection].add(name)
            if not all(field in where and targets(where[field]) for field in SHARDED[collection]):
                scattered.append((name, collection, where))
    assert not scattered, scattered
    # The paths did reach both collections with reads and writes.
    assert {"insert", "find", "update", "aggregate"} <= checked["messages"] | checked["notifications"]
    assert {"insert", "find"} <= checked["messages"] and {"insert", "find", "findAndModify", "update"} <= checked["notifications"]


async def test_grouped_notification_commands_carry_their_shard_key(start_app, make_amqp_vhost):
    """Counting into groups (concurrently, redelivered, across a window), listing, marking,
    and taking an account out after the write: every command names the recipient. Only
    the erasure of an actor's contributions (by actorId) may ask every shard."""
    import asyncio
    import uuid
    from datetime import timedelta

    from kernel.timefmt import iso, utcnow
    from server import appkeys
    from server.bus.types import DomainEvent

    overrides = own_namespaces(make_amqp_vhost, "shardgroups")
    recorder = CommandRecorder.installed(overrides["mongo_db"])
    async with start_app(**overrides) as api:
        author, *fans = [await api.register(f"skg{i}") for i in range(5)]
        notifications = api.app[appkeys.SERVICES].notifications
        post = str(uuid.uuid4())

        def like(fan, at=None, event_id=None):
            return DomainEvent(id=event_id or str(uuid.uuid4()), type="post.liked", created_at=iso(at or utcnow()),
                               payload={"post_id": post, "post_author_id": author.id, "actor_id": fan.id})

        recorder.recording = True
        await asyncio.gather(*(notifications.handle(like(fan)) for fan in fans[:3]))
        again = like(fans[3])
        await asyncio.gather(notifications.handle(again), notifications.handle(again))
        await notifications.handle(like(fans[0]))  # counted already
        await notifications.handle(like(fans[0], at=utcnow() + timedelta(hours=2)))  # the next window
        gone = DomainEvent(id=str(uuid.uuid4()), type="post.liked", created_at=iso(utcnow()),
                           payload={"post_id": post, "post_author_id": author.id, "actor_id": str(uuid.uuid4())})
        await notifications.handle(gone)  # no such account: taken back
        status, listed, _ = await api.request("GET", "/notifications", token=author.token)
        assert status == 200 and [n.get("count") for n in listed["items"] if n["type"] == "like"] == [1, 4]
        status, _, _ = await api.request("POST", f"/notifications/{listed['items'][1]['id']}/read", token=author.token)
        assert status == 200
        await api.request("GET", "/notifications/unread-count", token=author.token)
        retract_from = len(recorder.commands)
        await notifications.groups_repo.retract_actor(fans[1].id)
        recorder.recording = False
        await notifications.stop()

    scattered = []
    for i, (name, command) in enumerate(recorder.commands):
        for collection, where in filters(name, command):
            if collection not in SHARDED:
                continue
            if not all(field in where and targets(where[field]) for field in SHARDED[collection]):
                scattered.append((i, name, collection, where))
    # Only the erasure's look-up of the actor's contributions goes to every shard.
    assert all(i >= retract_from and collection == "notification_contributions" and "actorId" in where
               for i, _, collection, where in scattered), scattered
    touched = {collection for name, command in recorder.commands for collection, _ in filters(name, command)}
    assert {"notifications", "notification_contributions"} <= touched
