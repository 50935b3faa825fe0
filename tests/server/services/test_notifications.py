"""Notification consumers: who gets what, never yourself, once per event, pushed live."""
from __future__ import annotations

import uuid

import pytest

from kernel.cursors import Cursors
from kernel.timefmt import iso, utcnow
from server import appkeys
from server.bus.types import DomainEvent
from server.services.notifications import NotificationsService
from tests.server.services.ports import RecordingPusher

pytestmark = pytest.mark.asyncio(loop_scope="session")


def event(type_: str, **payload) -> DomainEvent:
    return DomainEvent(id=str(uuid.uuid4()), type=type_, payload=payload, created_at=iso(utcnow()))


@pytest.fixture
def pusher() -> RecordingPusher:
    return RecordingPusher()


@pytest.fixture
def notifications(server, pusher) -> NotificationsService:
    services = server.app[appkeys.SERVICES]
    return NotificationsService(server.app[appkeys.MONGO_DB], services.users, pusher=pusher,
                                cursors=Cursors.random())


async def listed(api, acct) -> list[dict]:
    """The account's notifications, less the welcome the bus delivers on registration."""
    status, body, _ = await api.request("GET", "/notifications", token=acct.token)
    assert status == 200
    return [n for n in body["items"] if n["type"] != "welcome"]


async def test_each_event_type_notifies_the_right_user(api, notifications, pusher):
    host, actor, attendee1, attendee2 = [await api.register(p) for p in ("eh", "ea", "e1", "e2")]
    post_id, event_id = str(uuid.uuid4()), str(uuid.uuid4())
    newcomer = (await api.register("enew")).id  # (the bus welcomes it too, by its own name)
    await notifications.handle(event("user.registered", user_id=newcomer, username="ada", display_name="Ada"))
    # No such account (purged while the event was in flight): nobody to welcome.
    nobody = str(uuid.uuid4())
    await notifications.handle(event("user.registered", user_id=nobody, username="bob", display_name="Bob"))
    await notifications.handle(event("post.liked", post_id=post_id, post_author_id=host.id, actor_id=actor.id))
    await notifications.handle(event("comment.created", comment_id=str(uuid.uuid4()), post_id=post_id,
                                     post_author_id=host.id, actor_id=actor.id))
    await notifications.handle(event("user.followed", follower_id=actor.id, followee_id=host.id))
    await notifications.handle(event("event.rsvp", event_id=event_id, host_id=host.id, actor_id=actor.id,
                                     status="going"))
    await notifications.handle(event("event.cancelled", event_id=event_id, host_id=host.id, title="Picnic",
                                     attendee_ids=[attendee1.id, attendee2.id, host.id]))
    await notifications.handle(event("post.created", post_id=post_id, author_id=host.id, created_at="x"))

    welcome = [n for n in (await notifications.list(newcomer, unread_only=False, limit=5, cursor=None))["items"]
               if "Ada" in n["message"]]
    assert [n["type"] for n in welcome] == ["welcome"]
    assert (await notifications.list(nobody, unread_only=False, limit=5, cursor=None))["items"] == []
    host_items = await listed(api, host)
    assert [n["type"] for n in host_items] == ["rsvp", "follow", "comment", "like"]
    assert host_items[0]["metadata"] == {"event_id": event_id, "actor_id": actor.id}
    assert host_items[1]["metadata"] == {"actor_id": actor.id}
    assert host_items[2]["metadata"] == {"post_id": post_id, "actor_id": actor.id}
    for attendee in (attendee1, attendee2):
        items = await listed(api, attendee)
        assert [n["type"] for n in items] == ["event_cancelled"] and "Picnic" in items[0]["message"]
        assert items[0]["metadata"]["event_id"] == event_id

    # Every stored notification went live to its user, as notification:new.
    stored = {acct.id: {n["id"]: n for n in await listed(api, acct)} for acct in (host, attendee1, attendee2)}
    stored[newcomer] = {n["id"]: n for n in welcome}
    assert len(pusher.pushed) == sum(len(items) for items in stored.values()) == 7
    for user_ids, name, data in pusher.pushed:
        assert name == "notification:new" and len(user_ids) == 1
        assert stored[user_ids[0]][data["notification"]["id"]] == data["notification"]

async def test_own_actions_never_notify(api, notifications, pusher):
    me = await api.register("own")
    post_id = str(uuid.uuid4())
    await notifications.handle(event("post.liked", post_id=post_id, post_author_id=me.id, actor_id=me.id))
    await notifications.handle(event("comment.created", comment_id=str(uuid.uuid4()), post_id=post_id,
                                     post_author_id=me.id, actor_id=me.id))
    await notifications.handle(event("user.followed", follower_id=me.id, followee_id=me.id))
    await notifications.handle(event("event.rsvp", event_id=str(uuid.uuid4()), host_id=me.id, actor_id=me.id,
                                     status="going"))
    await notifications.handle(event("event.cancelled", event_id=str(uuid.uuid4()), host_id=me.id, title="T",
                                     attendee_ids=[me.id]))
    assert await listed(api, me) == [] and pusher.pushed == []


async def test_same_event_twice_notifies_once(api, notifications, pusher):
    host, a, b = [await api.register(p) for p in ("ih", "ia", "ib")]
    like = event("post.liked", post_id=str(uuid.uuid4()), post_author_id=host.id, actor_id=a.id)
    cancelled = event("event.cancelled", event_id=str(uuid.uuid4()), host_id=host.id, title="Gig",
                      attendee_ids=[a.id, b.id])
    for _ in range(2):
        await notifications.handle(like)
        await notifications.handle(cancelled)
    assert [n["type"] for n in await listed(api, host)] == ["like"]
    assert len(await listed(api, a)) == 1 and len(await listed(api, b)) == 1
    assert len(pusher.pushed) == 3


async def test_consumer_declares_its_event_types(notifications):
    [consumer] = notifications.consumers()
    assert consumer.name == "notifications"
    assert set(consumer.event_types) == {"user.registered", "post.liked", "comment.created", "user.followed",
                                         "event.rsvp", "event.cancelled"}
    assert consumer.handle == notifications.handle
