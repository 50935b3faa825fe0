"""Grouped notifications (API.md v1.1): likes of a post, comments on a post and new
followers within the window are one notification per recipient and target, counted
exactly under concurrent and redelivered events, pushed coalesced, read and counted as one,
exported, and adjusted when an actor or the recipient is erased."""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import orjson
import pytest

from kernel.cursors import Cursors
from kernel.timefmt import iso, utcnow
from server import appkeys
from server.bus.types import DomainEvent
from server.services.notifications import NotificationsService
from storage.redis.client import Keys
from storage.redis.notification_push import PushWindowStore
from tests.helpers.waiting import eventually
from tests.privacy_helpers import mongo_traces, privacy_of
from tests.server.services.ports import RecordingPusher

pytestmark = pytest.mark.asyncio(loop_scope="session")

HOUR = timedelta(hours=1)


def event(type_: str, at=None, **payload) -> DomainEvent:
    return DomainEvent(id=str(uuid.uuid4()), type=type_, payload=payload, created_at=iso(at or utcnow()))


def like(author, actor, post_id: str, at=None) -> DomainEvent:
    return event("post.liked", at, post_id=post_id, post_author_id=author.id, actor_id=actor.id)


@pytest.fixture
def pusher() -> RecordingPusher:
    return RecordingPusher()


def service(server, pusher, push_windows=None) -> NotificationsService:
    services = server.app[appkeys.SERVICES]
    return NotificationsService(server.app[appkeys.MONGO_DB], services.users, pusher=pusher, cursors=Cursors.random(),
                                push_windows=push_windows)


@pytest.fixture
def notifications(server, pusher) -> NotificationsService:
    return service(server, pusher)


async def accounts(api, prefix: str, n: int):
    return await asyncio.gather(*(api.register(f"{prefix}{i}") for i in range(n)))


async def welcomed(notifications, acct) -> None:
    """The welcome (from user.registered, through the session's bus) has arrived."""
    async def arrived():
        items = (await notifications.list(acct.id, unread_only=False, limit=100, cursor=None))["items"]
        return any(n["type"] == "welcome" for n in items)

    await eventually(arrived)


async def groups_of(notifications, acct) -> list[dict]:
    items = (await notifications.list(acct.id, unread_only=False, limit=100, cursor=None))["items"]
    return [n for n in items if n.get("group_key")]


def pushed_groups(pusher) -> list[dict]:
    return [data["notification"] for _, name, data in pusher.pushed
            if name == "notification:new" and data["notification"].get("group_key")]


async def test_likes_comments_and_follows_group_per_target_and_window(api, notifications, pusher):
    author, ann, bob, cyd = await accounts(api, "gw", 4)
    post, other_post = str(uuid.uuid4()), str(uuid.uuid4())
    start = utcnow()
    await notifications.handle(like(author, ann, post, start))
    await notifications.handle(like(author, bob, post, start + HOUR - timedelta(seconds=1)))
    await notifications.handle(like(author, ann, other_post, start))
    for actor in (ann, bob):
        await notifications.handle(event("comment.created", start, comment_id=str(uuid.uuid4()), post_id=post,
                                         post_author_id=author.id, actor_id=actor.id))
        await notifications.handle(event("user.followed", start, follower_id=actor.id, followee_id=author.id))
    groups = {g["group_key"]: g for g in await groups_of(notifications, author)}
    assert set(groups) == {f"like:{post}", f"like:{other_post}", f"comment:{post}", f"follow:{author.id}"}
    liked = groups[f"like:{post}"]
    assert liked["count"] == 2 and liked["actor_ids"] == [bob.id, ann.id] and liked["type"] == "like"
    assert liked["metadata"] == {"post_id": post, "actor_id": bob.id}
    assert liked["message"] == f"{bob.user['display_name']} and {ann.user['display_name']} liked your post"
    assert groups[f"comment:{post}"]["count"] == 2 and groups[f"follow:{author.id}"]["count"] == 2
    assert groups[f"follow:{author.id}"]["metadata"] == {"actor_id": bob.id}
    # A like once the window (from the group's first event) is over starts a new group.
    await notifications.handle(like(author, cyd, post, start + HOUR))
    likes = [g for g in await groups_of(notifications, author) if g["group_key"] == f"like:{post}"]
    assert [(g["count"], g["actor_ids"]) for g in likes] == [(1, [cyd.id]), (2, [bob.id, ann.id])]
    assert likes[0]["id"] != liked["id"]
    # Each change was pushed as the group then stood (no coalescing in this service).
    assert [g["count"] for g in pushed_groups(pusher) if g["id"] == liked["id"]] == [1, 2]


async def test_concurrent_likes_make_one_group_counting_each(api, notifications, pusher):
    author, *fans = await accounts(api, "gc", 21)
    post = str(uuid.uuid4())
    await welcomed(notifications, author)
    await asyncio.gather(*(notifications.handle(like(author, fan, post)) for fan in fans))
    [group] = await groups_of(notifications, author)
    assert group["count"] == 20 and len(group["actor_ids"]) == 3 and set(group["actor_ids"]) <= {f.id for f in fans}
    assert group["message"].endswith("and 19 others liked your post")
    assert (await notifications.unread_count(author.id)) == 2  # the group and the welcome


async def test_a_redelivered_event_counts_once_and_a_relike_adds_nobody(api, notifications, pusher):
    author, ann, bob = await accounts(api, "gr", 3)
    post = str(uuid.uuid4())
    first = like(author, ann, post)
    await notifications.handle(first)
    await notifications.handle(first)  # redelivered
    await asyncio.gather(notifications.handle(first), notifications.handle(first))  # twice at once
    await notifications.handle(like(author, ann, post))  # unliked and liked again
    [group] = await groups_of(notifications, author)
    assert group["count"] == 1 and group["actor_ids"] == [ann.id]
    await notifications.handle(like(author, bob, post))
    [group] = await groups_of(notifications, author)
    assert group["count"] == 2
    assert [g["count"] for g in pushed_groups(pusher)][-1] == 2


async def test_a_burst_is_pushed_coalesced_and_the_last_push_has_the_final_count(api, server, settings, pusher):
    author, *fans = await accounts(api, "gp", 31)
    windows = PushWindowStore(server.app[appkeys.REDIS], Keys(f"{settings.namespace}:gp{uuid.uuid4().hex[:6]}"),
                          window_ms=300)
    notifications = service(server, pusher, windows)
    post = str(uuid.uuid4())
    started = time.monotonic()
    for fan in fans:  # 30 likes over about 1.5 s
        await notifications.handle(like(author, fan, post))
        await asyncio.sleep(0.05)
    burst = time.monotonic() - started
    await asyncio.sleep(0.9)  # past the last window
    pushes = pushed_groups(pusher)
    assert pushes[-1]["count"] == 30 and pushes[-1]["actor_ids"][0] == fans[-1].id
    assert 2 <= len(pushes) <= burst / 0.3 + 2
    [group] = await groups_of(notifications, author)
    assert pushes[-1] == group  # the group as it stands
    await notifications.stop()


async def test_a_group_is_one_unread_notification_and_unread_again_when_it_grows(api, notifications, pusher):
    author, ann, bob, cyd = await accounts(api, "gu", 4)
    post = str(uuid.uuid4())
    await welcomed(notifications, author)
    await notifications.mark_all_read(author.id)
    await notifications.handle(like(author, ann, post))
    await notifications.handle(like(author, bob, post))
    assert await notifications.unread_count(author.id) == 1
    [group] = await groups_of(notifications, author)
    marked = await notifications.mark_read(author.id, group["id"])
    assert marked["read"] is True and marked["count"] == 2 and marked["group_key"] == f"like:{post}"
    assert await notifications.unread_count(author.id) == 0
    # Something newer, then the group grows: it is unread again, and on top.
    await notifications.handle(event("event.rsvp", event_id=str(uuid.uuid4()), host_id=author.id, actor_id=ann.id,
                                     status="going"))
    await notifications.handle(like(author, cyd, post))
    items = (await notifications.list(author.id, unread_only=True, limit=10, cursor=None))["items"]
    assert [(n["type"], n.get("count")) for n in items] == [("like", 3), ("rsvp", None)]
    assert items[0]["id"] == group["id"] and await notifications.unread_count(author.id) == 2
    assert await notifications.mark_all_read(author.id) == 2
    assert await notifications.unread_count(author.id) == 0


async def test_export_lists_the_groups(api, notifications):
    author, ann, bob = await accounts(api, "ge", 3)
    post = str(uuid.uuid4())
    for actor in (ann, bob):
        await notifications.handle(like(author, actor, post))
    status, body, _ = await api.request("GET", "/users/me/export", token=author.token)
    assert status == 200
    doc = orjson.loads(body) if isinstance(body, bytes) else body
    [group] = [n for n in doc["notifications"] if n.get("group_key")]
    assert group["group_key"] == f"like:{post}" and group["count"] == 2 and group["actor_ids"] == [bob.id, ann.id]


async def test_erasing_an_actor_takes_them_out_of_groups_and_erasing_the_recipient_deletes_them(api, server,
                                                                                                 notifications):
    author, leaving, ann, bob, other = await accounts(api, "gx", 5)
    post, lonely_post = str(uuid.uuid4()), str(uuid.uuid4())
    for actor in (ann, leaving, bob):
        await notifications.handle(like(author, actor, post))
    await notifications.handle(like(author, leaving, lonely_post))
    await notifications.handle(event("user.followed", follower_id=leaving.id, followee_id=author.id))
    # The leaving user's own groups (as a recipient).
    await notifications.handle(like(leaving, other, str(uuid.uuid4())))
    await notifications.handle(event("user.followed", follower_id=other.id, followee_id=leaving.id))
    assert len(await groups_of(notifications, leaving)) == 2

    outcome = await privacy_of(server).purge_now(leaving.id)
    assert outcome is not None
    groups = {g["group_key"]: g for g in await groups_of(notifications, author)}
    # count − their contribution; the recent actors without them; their only ones gone.
    assert set(groups) == {f"like:{post}"}
    assert groups[f"like:{post}"]["count"] == 2 and groups[f"like:{post}"]["actor_ids"] == [bob.id, ann.id]
    assert leaving.user["display_name"] not in groups[f"like:{post}"]["message"]
    assert await groups_of(notifications, leaving) == []
    assert await mongo_traces(server.app[appkeys.SETTINGS], [leaving.id]) == {}
    # An event about them still in flight counts nothing.
    await notifications.handle(like(author, leaving, post))
    await notifications.handle(like(leaving, other, str(uuid.uuid4())))
    assert (await groups_of(notifications, author))[0]["count"] == 2
    assert await mongo_traces(server.app[appkeys.SETTINGS], [leaving.id]) == {}


async def test_an_account_gone_meanwhile_is_taken_back_after_the_write(api, notifications, pusher):
    author, ann = await accounts(api, "gg", 2)
    post = str(uuid.uuid4())
    ghost = type("Ghost", (), {"id": str(uuid.uuid4())})()  # no such account
    await notifications.handle(like(author, ghost, post))
    await notifications.handle(like(ghost, ann, post))
    assert await groups_of(notifications, author) == [] and pushed_groups(pusher) == []
    await notifications.handle(like(author, ann, post))
    [group] = await groups_of(notifications, author)
    assert group["count"] == 1 and group["actor_ids"] == [ann.id]
