"""Grouped notifications in MongoDB: one group per (recipient, key, window) however events
race, every distinct actor counted exactly once (redeliveries, handlers that stopped
half-way, an actor taken out while being counted), and erasure's retraction."""
from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from storage.mongo.client import ensure_indexes
from storage.mongo.notification_groups import NotificationGroupsRepo
from storage.mongo.notifications import NotificationsRepo
from storage.mongo.values import mongo_now

pytestmark = pytest.mark.asyncio(loop_scope="session")

WINDOW = timedelta(hours=1)


@pytest.fixture
async def db(settings):
    client = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    db = client[f"groups_{uuid.uuid4().hex[:8]}"]
    await ensure_indexes(db, settings)
    yield db
    await client.drop_database(db.name)
    await client.close()


@pytest.fixture
def repo(db) -> NotificationGroupsRepo:
    return NotificationGroupsRepo(db)


class Likes:
    """Likes of one post by one recipient's readers, as the consumer counts them."""

    def __init__(self, repo: NotificationGroupsRepo, recipient: str = "author") -> None:
        self.repo = repo
        self.recipient = recipient
        self.post = uuid.uuid4().hex
        self.start = mongo_now()

    def args(self, actor: str, source: str | None = None, after: timedelta = timedelta(0)) -> dict:
        return dict(user_id=self.recipient, kind="like", group_key=f"like:{self.post}",
                    metadata={"postId": self.post}, actor_id=actor, actor_name=actor.title(),
                    source_id=source or uuid.uuid4().hex, occurred_at=self.start + after, window=WINDOW,
                    now=mongo_now())

    async def like(self, actor: str, source: str | None = None, after: timedelta = timedelta(0)):
        return await self.repo.add(**self.args(actor, source, after))

    async def groups(self) -> list[dict]:
        return await self.repo.groups.find({"userId": self.recipient, "groupKey": f"like:{self.post}"}).sort(
            "windowStart", 1).to_list(None)

    async def group(self) -> dict:
        [group] = await self.groups()
        return group


async def test_events_within_the_window_are_one_group_and_a_later_one_opens_the_next(repo):
    likes = Likes(repo)
    first, _ = await likes.like("ann")
    assert first["count"] == 1 and first["read"] is False and first["type"] == "like"
    joined, _ = await likes.like("bob", after=WINDOW - timedelta(seconds=1))
    assert joined["_id"] == first["_id"] and joined["count"] == 2
    later, _ = await likes.like("cyd", after=WINDOW)  # the window starts at the first event
    assert later["_id"] != first["_id"] and later["count"] == 1
    old, new = await likes.groups()
    assert "openKey" not in old and old["count"] == 2 and new["openKey"] == f"like:{likes.post}"
    # An event late by more than the window still joins the group open now.
    late, _ = await likes.like("dan", after=timedelta(seconds=5))
    assert late["_id"] == new["_id"] and late["count"] == 2


async def test_concurrent_events_make_one_group_with_every_count(repo):
    likes = Likes(repo)
    actors = [f"actor{i}" for i in range(40)]
    results = await asyncio.gather(*(likes.like(a) for a in actors))
    assert all(r is not None for r in results)
    group = await likes.group()
    assert group["count"] == 40 and len(group["actors"]) == 3
    assert await repo.contributions.count_documents({"userId": "author", "groupId": group["_id"]}) == 40
    # The counts seen by the handlers are every value once: none was lost or doubled.
    assert sorted(g["count"] for g, _ in results) == list(range(1, 41))


async def test_concurrent_events_across_the_window_end_open_one_next_group(repo):
    likes = Likes(repo)
    await likes.like("first")
    await asyncio.gather(*(likes.like(f"late{i}", after=WINDOW + timedelta(seconds=i % 3)) for i in range(20)))
    old, new = await likes.groups()
    assert old["count"] == 1 and new["count"] == 20


async def test_a_redelivered_event_or_a_second_like_by_one_actor_counts_once(repo):
    likes = Likes(repo)
    source = uuid.uuid4().hex
    assert await likes.like("ann", source) is not None
    assert await likes.like("ann", source) is None  # the same event again
    assert await likes.like("ann") is None  # liked, unliked, liked again: one actor
    # The same event delivered twice at once (two consumers): counted once (both may
    # report the group, for a push).
    twice = uuid.uuid4().hex
    results = await asyncio.gather(*(likes.like("bob", twice) for _ in range(4)))
    assert {r[0]["count"] for r in results if r is not None} == {2}
    assert (await likes.group())["count"] == 2


async def test_many_events_each_delivered_three_times_at_once_count_each_once(repo):
    likes = Likes(repo)
    deliveries = [likes.args(f"fan{i}") for i in range(30)] * 3
    random.Random(7).shuffle(deliveries)
    await asyncio.gather(*(repo.add(**args) for args in deliveries))
    group = await likes.group()
    assert group["count"] == 30 and group["unsettled"] == [] and len(group["actors"]) == 3
    assert await repo.contributions.count_documents({"userId": "author", "applied": True}) == 30


async def test_a_redelivery_after_the_window_moved_on_counts_nowhere_else(repo):
    likes = Likes(repo)
    source = uuid.uuid4().hex
    await likes.like("ann", source)
    await likes.like("bob", after=WINDOW * 2)  # the next group is open now
    assert await likes.like("ann", source) is None
    assert [g["count"] for g in await likes.groups()] == [1, 1]


async def test_a_handler_that_stopped_half_way_is_finished_by_the_redelivery(repo):
    likes = Likes(repo)
    # Stopped after the claim: the redelivery counts it.
    args = likes.args("ann")
    group_id = await repo._open_group(args["user_id"], "like", args["group_key"], args["metadata"],
                                      args["occurred_at"], WINDOW, args["now"])
    await repo._claim(args["user_id"], group_id, "ann", "Ann", args["source_id"], args["now"])
    assert (await likes.group())["count"] == 0
    group, contribution = await repo.add(**args)
    assert group["count"] == 1 and contribution["actorId"] == "ann"
    # Stopped (or timed out) after counting, before settling, and many likes came in
    # between: the redelivery adopts that count instead of counting again.
    args = likes.args("bob")
    pending = await repo._claim(args["user_id"], group_id, "bob", "Bob", args["source_id"], args["now"])
    await repo._apply(pending, ObjectId())
    await asyncio.gather(*(likes.like(f"fan{i}") for i in range(100)))
    group, _ = await repo.add(**args)
    assert group["count"] == 102
    assert await repo.add(**args) is None
    # Stopped after settling, before forgetting its token: nothing counted twice, and the
    # token is forgotten by the redelivery.
    args = likes.args("cyd")
    pending = await repo._claim(args["user_id"], group_id, "cyd", "Cyd", args["source_id"], args["now"])
    token = ObjectId()
    await repo._apply(pending, token)
    await repo.contributions.update_one({"_id": pending["_id"]}, {"$set": {"applied": True, "appliedBy": token}})
    assert await repo.add(**args) is None
    group = await likes.group()
    assert group["count"] == 103 and group["unsettled"] == []


async def test_a_second_application_of_one_contribution_is_taken_back(repo):
    likes = Likes(repo)
    await likes.like("ann")
    args = likes.args("bob")
    group_id = (await likes.group())["_id"]
    pending = await repo._claim(args["user_id"], group_id, "bob", "Bob", args["source_id"], args["now"])
    first, second = ObjectId(), ObjectId()
    # Two handlers of one event: the first counts and settles; the second, with the
    # contribution it read while pending, counts again, fails to settle, takes it back.
    assert (await repo._apply(pending, first))[1] is True
    assert await repo._settle(pending, first)
    assert (await repo._apply(pending, second))[1] is True
    assert not await repo._settle(pending, second)
    assert await repo._shrink(pending, token=second)
    group = await likes.group()
    assert group["count"] == 2 and group["unsettled"] == []
    # The take-back pulled both of bob's entries; the refill put him back, once.
    assert [a["id"] for a in group["actors"]] == ["ann", "bob"]


async def test_recent_actors_are_the_last_three_newest_first_and_nothing_is_left_unsettled(repo):
    likes = Likes(repo)
    n = 70
    for i in range(n):
        await likes.like(f"a{i:03}")
    group = await likes.group()
    assert [a["id"] for a in group["actors"]] == [f"a{n - 1:03}", f"a{n - 2:03}", f"a{n - 3:03}"]
    assert group["actors"][0]["name"] == f"A{n - 1:03}"
    assert group["count"] == n and group["unsettled"] == []


async def test_retracting_an_actor_adjusts_the_count_and_refills_the_recent_actors(repo):
    likes = Likes(repo)
    for actor in ("ann", "bob", "cyd", "dan"):
        await likes.like(actor)
    assert [a["id"] for a in (await likes.group())["actors"]] == ["dan", "cyd", "bob"]
    assert await repo.retract_actor("cyd") == 1
    group = await likes.group()
    assert group["count"] == 3 and [a["id"] for a in group["actors"]] == ["dan", "bob", "ann"]
    assert await repo.retract_actor("cyd") == 0  # idempotent
    for actor in ("dan", "bob"):
        await repo.retract_actor(actor)
    group = await likes.group()
    assert group["count"] == 1 and [a["id"] for a in group["actors"]] == ["ann"]
    await repo.retract_actor("ann")
    assert await likes.groups() == []  # count 0: gone
    assert await repo.contributions.count_documents({"userId": "author"}) == 0


async def test_an_actor_retracted_while_being_counted_is_not_counted(repo):
    likes = Likes(repo)
    await likes.like("ann")
    group_id = (await likes.group())["_id"]
    # The handler claimed and counted, then the erasure ran, then the handler settles:
    # the erasure took the count back, and the handler's own take-back changes nothing.
    args = likes.args("eve")
    pending = await repo._claim(args["user_id"], group_id, "eve", "Eve", args["source_id"], args["now"])
    token = ObjectId()
    await repo._apply(pending, token)
    assert (await likes.group())["count"] == 2
    await repo.retract_actor("eve")
    assert not await repo._settle(pending, token)
    assert not await repo._shrink(pending, token=token)
    group = await likes.group()
    assert group["count"] == 1 and [a["id"] for a in group["actors"]] == ["ann"] and group["unsettled"] == []
    # Retracted after the claim, before counting: the handler counts, fails to settle,
    # takes its count back.
    args = likes.args("fay")
    pending = await repo._claim(args["user_id"], group_id, "fay", "Fay", args["source_id"], args["now"])
    await repo.retract_actor("fay")
    token = ObjectId()
    await repo._apply(pending, token)
    assert not await repo._settle(pending, token)
    assert await repo._shrink(pending, token=token)
    group = await likes.group()
    assert group["count"] == 1 and [a["id"] for a in group["actors"]] == ["ann"]
    # A settled contribution whose token its handler had not forgotten yet: once.
    await likes.like("gus")
    args = likes.args("hal")
    pending = await repo._claim(args["user_id"], group_id, "hal", "Hal", args["source_id"], args["now"])
    token = ObjectId()
    await repo._apply(pending, token)
    await repo.contributions.update_one({"_id": pending["_id"]}, {"$set": {"applied": True, "appliedBy": token}})
    await repo.retract_actor("hal")
    group = await likes.group()
    assert group["count"] == 2 and group["unsettled"] == [] and {a["id"] for a in group["actors"]} == {"ann", "gus"}


async def test_concurrent_erasure_and_likes_keep_the_count_exact(repo):
    likes = Likes(repo)
    await asyncio.gather(*(likes.like(f"old{i}") for i in range(10)))
    await asyncio.gather(*(likes.like(f"new{i}") for i in range(10)),
                         *(repo.retract_actor(f"old{i}") for i in range(0, 10, 2)))
    group = await likes.group()
    assert group["count"] == 15
    assert await repo.contributions.count_documents({"userId": "author", "groupId": group["_id"]}) == 15
    assert len(group["actors"]) == 3 and not any(a["id"] in {f"old{i}" for i in range(0, 10, 2)}
                                                for a in group["actors"])


async def test_a_group_gone_under_a_handler_is_counted_afresh(repo):
    likes = Likes(repo)
    await likes.like("ann")
    args = likes.args("bob")
    group_id = (await likes.group())["_id"]
    pending = await repo._claim(args["user_id"], group_id, "bob", "Bob", args["source_id"], args["now"])
    await repo.retract_actor("ann")  # count 0: the group is deleted
    await repo.contributions.delete_one({"_id": pending["_id"]})  # (as if its handler never claimed)
    group, _ = await repo.add(**args)
    assert group["_id"] != group_id and group["count"] == 1


async def test_opened_groups_without_a_count_are_not_listed(repo, db):
    likes = Likes(repo)
    args = likes.args("ann")
    await repo._open_group(args["user_id"], "like", args["group_key"], args["metadata"], args["occurred_at"],
                           WINDOW, args["now"])
    notifications = NotificationsRepo(db)
    assert await notifications.list_for_user("author", unread_only=False, limit=10, after=None) == []
    assert await notifications.count_unread("author") == 0
    assert await notifications.page_for_user("author", None, 10) == []
    await likes.like("ann")
    [listed] = await notifications.list_for_user("author", unread_only=False, limit=10, after=None)
    assert listed["count"] == 1
    assert await notifications.count_unread("author") == 1


async def test_deleting_for_the_recipient_takes_their_contributions(repo):
    likes = Likes(repo, recipient="gone")
    await likes.like("ann")
    group = await likes.group()
    await repo.delete_group("gone", group["_id"])
    assert await likes.groups() == [] and await repo.contributions.count_documents({"userId": "gone"}) == 0
    await likes.like("bob")
    await repo.delete_for_recipient("gone")
    assert await repo.contributions.count_documents({"userId": "gone"}) == 0
    assert await repo.recipients_of_actor("bob") == []
