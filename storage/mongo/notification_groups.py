"""Grouped notifications: one notification per (recipient, group key, window) that counts
the distinct actors of one kind of event about one target (the likes of a post, the
comments on a post, new followers).

A group is a document of ``notifications`` (so the list, the unread count, mark-read,
the export and the TTL treat it as one notification)::

    {_id, userId, type, groupKey, openKey?, windowStart, count, actors: [{id, name}],
     applied: [contribution ids], read, createdAt, metadata: {postId?}}

``openKey`` (the group key) is set while the group takes new events: a unique partial
index on (userId, openKey) allows one open group per key, so concurrent events never open
two. ``windowStart`` is the time of the event that opened it; an event
``PULSE_NOTIFICATION_GROUP_SECONDS`` or more after it closes the group (unsets
``openKey``) and opens the next. ``createdAt`` is the latest growth (the list's order:
a group that grows moves to the top). ``actors`` are the most recent three, newest first.

Each actor counted in a group is a document of ``notification_contributions``::

    {_id, userId, groupId, actorId, actorName, sourceId, at, applied}

unique on (userId, sourceId) (an event counts once, whichever group it would land in on a
redelivery) and on (userId, groupId, actorId) (an actor counts once per group: a like,
unlike and like again is one). That collection is what keeps ``count`` exact while the
group document stays small (a viral post's 100k likers are 100k small documents, not one
huge array), and what erasure reads to take an actor out of the groups they are in.

Counting an event is four single-document steps, none of which may run twice in effect:

1. find the open group, or open one (count 0, hidden: lists skip ``count: 0``);
2. claim: insert the contribution (``applied: false``). A duplicate says the event or the
   actor is counted already (``applied: true``: done) or being counted by a handler that
   is running or crashed (``applied: false``: go on with that contribution);
3. apply: ``$inc`` the count, ``$push`` the actor, only if the contribution's id is not in
   the group's ``applied`` list (the last 64 applied ids): of two handlers applying one
   contribution at once, one changes the group;
4. settle: ``applied: true``. If the contribution is gone meanwhile (an erasure retracted
   it), the handler undoes its own step 3 (guarded by ``applied`` again).

The one inexact case: a handler crashes between steps 3 and 4 and its redelivery comes
after 64 other contributions were applied to the same group; it is then counted twice.

Sharded by ``userId`` like ``notifications``; only the erasure of an actor's
contributions (by ``actorId``) asks every shard.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

SHARD_KEY: dict[str, int] = {"userId": 1}

# Contribution ids a group remembers as applied (step 3's guard; about 1 KiB).
APPLIED_IDS_MAX = 64
# The most recent actors a group shows.
RECENT_ACTORS_MAX = 3
# Rounds of the open-or-create race (each round is lost only to a concurrent change).
_ATTEMPTS = 8

# A group is opened with count 0 and read: lists and exports skip it until its first
# count (unread ones always have a count: a group is unread only once counted).
VISIBLE = {"count": {"$ne": 0}}


class GroupsChanged(RuntimeError):
    """The group kept changing under one event (retry it)."""


class NotificationGroupsRepo:
    def __init__(self, db: AsyncDatabase) -> None:
        self.groups = db["notifications"]
        self.contributions = db["notification_contributions"]

    # --- counting an event -------------------------------------------------------------

    async def add(
        self, *, user_id: str, kind: str, group_key: str, metadata: dict[str, Any], actor_id: str,
        actor_name: str, source_id: str, occurred_at: datetime, window: timedelta, now: datetime,
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Counts ``actor_id``'s event ``source_id`` in the recipient's open group for
        ``group_key`` (opened when there is none, or the open one started ``window`` or
        more before ``occurred_at``). Returns (the group after, the contribution), or
        None when the event or this actor was counted already. (Two handlers of one
        event at once may both return the group, counted once.)"""
        for _ in range(_ATTEMPTS):
            group_id = await self._open_group(user_id, kind, group_key, metadata, occurred_at, window, now)
            contribution = await self._claim(user_id, group_id, actor_id, actor_name, source_id, now)
            if contribution is None:
                return None
            group = await self._apply(contribution)
            if group is None:
                # The group is gone (an erasure took its count to 0): count the event
                # afresh, unless a concurrent handler took the contribution over.
                if await self._drop_pending(contribution):
                    continue
                return None
            if not await self._settle(contribution):
                await self._undo(contribution)  # retracted while being applied
                return None
            return group, contribution
        raise GroupsChanged(f"group {group_key} of {user_id} kept changing")

    async def _open_group(self, user_id: str, kind: str, group_key: str, metadata: dict[str, Any],
                          occurred_at: datetime, window: timedelta, now: datetime) -> ObjectId:
        expired_before = occurred_at - window
        for _ in range(_ATTEMPTS):
            found = await self.groups.find_one(
                {"userId": user_id, "openKey": group_key, "windowStart": {"$gt": expired_before}}, {"_id": 1})
            if found is not None:
                return found["_id"]
            group_id = ObjectId()
            try:
                await self.groups.insert_one({
                    "_id": group_id, "userId": user_id, "type": kind, "groupKey": group_key, "openKey": group_key,
                    "windowStart": occurred_at, "count": 0, "actors": [], "applied": [], "read": True,
                    "createdAt": now, "metadata": metadata,
                })
                return group_id
            except DuplicateKeyError:
                # The open group is too old for this event: close it. (Or another event
                # opened one just now: the next round finds it.)
                await self.groups.update_many(
                    {"userId": user_id, "openKey": group_key, "windowStart": {"$lte": expired_before}},
                    {"$unset": {"openKey": ""}})
        raise GroupsChanged(f"group {group_key} of {user_id} kept changing")

    async def _claim(self, user_id: str, group_id: ObjectId, actor_id: str, actor_name: str, source_id: str,
                     now: datetime) -> dict[str, Any] | None:
        """The contribution to apply (new, or pending from a handler that did not finish);
        None when the event or the actor is counted already."""
        doc = {"_id": ObjectId(), "userId": user_id, "groupId": group_id, "actorId": actor_id,
               "actorName": actor_name, "sourceId": source_id, "at": now, "applied": False}
        try:
            await self.contributions.insert_one(doc)
            return doc
        except DuplicateKeyError:
            pass
        existing = (await self.contributions.find_one({"userId": user_id, "sourceId": source_id})
                    or await self.contributions.find_one({"userId": user_id, "groupId": group_id, "actorId": actor_id}))
        if existing is None or existing["applied"]:
            # Counted (or retracted by an erasure just now: nothing to count).
            return None
        return existing

    async def _apply(self, c: dict[str, Any]) -> dict[str, Any] | None:
        """The group after counting ``c`` (or as it is, when ``c`` was applied already);
        None when the group is gone."""
        group = await self.groups.find_one_and_update(
            {"_id": c["groupId"], "userId": c["userId"], "applied": {"$ne": c["_id"]}},
            {"$inc": {"count": 1},
             "$push": {"applied": {"$each": [c["_id"]], "$slice": -APPLIED_IDS_MAX},
                       "actors": {"$each": [{"id": c["actorId"], "name": c["actorName"]}], "$position": 0,
                                  "$slice": RECENT_ACTORS_MAX}},
             "$set": {"read": False}, "$max": {"createdAt": c["at"]}},
            return_document=ReturnDocument.AFTER,
        )
        if group is not None:
            return group
        return await self.groups.find_one({"_id": c["groupId"], "userId": c["userId"]})

    async def _settle(self, c: dict[str, Any]) -> bool:
        """Marks ``c`` applied; False when it is gone (retracted meanwhile)."""
        result = await self.contributions.update_one({"_id": c["_id"], "userId": c["userId"], "applied": False},
                                                     {"$set": {"applied": True}})
        if result.matched_count:
            return True
        return await self.contributions.find_one({"_id": c["_id"], "userId": c["userId"]}, {"_id": 1}) is not None

    async def _drop_pending(self, c: dict[str, Any]) -> bool:
        result = await self.contributions.delete_one({"_id": c["_id"], "userId": c["userId"], "applied": False})
        return result.deleted_count == 1

    async def _undo(self, c: dict[str, Any]) -> None:
        """Takes back this handler's own step 3 (only if it is still there)."""
        await self._shrink(c, guarded=True)

    # --- taking actors out (erasure, and consumers that find an account gone) ---------

    async def retract(self, contribution: dict[str, Any]) -> None:
        """Takes the contribution out of its group: count − 1, the actor out of the recent
        ones (refilled from the group's other contributions), the group deleted when its
        count reaches 0. Idempotent: whoever deletes the contribution adjusts the group."""
        c = await self.contributions.find_one_and_delete({"_id": contribution["_id"], "userId": contribution["userId"]})
        if c is not None:
            # Applied and settled: counted for sure. Pending: counted only if its id is
            # in the group's applied list (else the running handler undoes it itself).
            await self._shrink(c, guarded=not c["applied"])

    async def _shrink(self, c: dict[str, Any], *, guarded: bool) -> None:
        query: dict[str, Any] = {"_id": c["groupId"], "userId": c["userId"]}
        if guarded:
            query["applied"] = c["_id"]
        group = await self.groups.find_one_and_update(
            query, {"$inc": {"count": -1}, "$pull": {"applied": c["_id"], "actors": {"id": c["actorId"]}}},
            return_document=ReturnDocument.AFTER,
        )
        if group is None:
            return
        if group["count"] <= 0:
            await self.groups.delete_one({"_id": group["_id"], "userId": group["userId"], "count": {"$lte": 0}})
            return
        await self._refill_actors(group)

    async def _refill_actors(self, group: dict[str, Any]) -> None:
        """Tops the recent actors up from the group's other applied contributions (older
        than those shown), by compare and set: a concurrent count pushes its actor, and
        this reads the group again."""
        for _ in range(_ATTEMPTS):
            if group is None or len(group["actors"]) >= min(RECENT_ACTORS_MAX, group["count"]):
                return
            shown = [a["id"] for a in group["actors"]]
            older = await self.contributions.find(
                {"userId": group["userId"], "groupId": group["_id"], "applied": True, "actorId": {"$nin": shown}},
                {"actorId": 1, "actorName": 1},
            ).sort([("at", -1), ("_id", -1)]).limit(RECENT_ACTORS_MAX - len(shown)).to_list(None)
            if not older:
                return
            actors = [*group["actors"], *({"id": r["actorId"], "name": r["actorName"]} for r in older)]
            result = await self.groups.update_one(
                {"_id": group["_id"], "userId": group["userId"], "actors": group["actors"]},
                {"$set": {"actors": actors}})
            if result.matched_count:
                return
            group = await self.groups.find_one({"_id": group["_id"], "userId": group["userId"]},
                                               {"actors": 1, "count": 1, "userId": 1})

    async def contributions_of_actor(self, actor_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """Erasure: a batch of the actor's contributions, to every recipient (each one
        retracted leaves the next batch)."""
        return await self.contributions.find({"actorId": actor_id}).limit(limit).to_list(None)

    async def recipients_of_actor(self, actor_id: str) -> list[str]:
        """Erasure: the users holding a group the actor is counted in (each once)."""
        return [r for r in await self.contributions.distinct("userId", {"actorId": actor_id}) if r]

    async def retract_actor(self, actor_id: str) -> int:
        """Erasure: the actor out of every group they are counted in; returns how many."""
        retracted = 0
        while True:
            batch = await self.contributions_of_actor(actor_id)
            for contribution in batch:
                await self.retract(contribution)
            retracted += len(batch)
            if not batch:
                return retracted

    async def delete_group(self, user_id: str, group_id: ObjectId) -> None:
        """A group whose recipient is gone, with its contributions."""
        await self.groups.delete_one({"_id": group_id, "userId": user_id})
        await self.contributions.delete_many({"userId": user_id, "groupId": group_id})

    async def delete_for_recipient(self, user_id: str) -> None:
        """Erasure: the contributions to the user's groups (the groups are notifications
        and go with them)."""
        await self.contributions.delete_many({"userId": user_id})

    async def get(self, user_id: str, group_id: ObjectId) -> dict[str, Any] | None:
        return await self.groups.find_one({"_id": group_id, "userId": user_id, **VISIBLE})
