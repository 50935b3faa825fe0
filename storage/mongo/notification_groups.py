"""Grouped notifications: one notification per (recipient, group key, window) that counts
the distinct actors of one kind of event about one target (the likes of a post, the
comments on a post, new followers).

A group is a document of ``notifications`` (so the list, the unread count, mark-read,
the export and the TTL treat it as one notification)::

    {_id, userId, type, groupKey, openKey?, windowStart, count, actors: [{id, name}],
     unsettled: [{c: contribution id, t: token}], read, createdAt, metadata: {postId?}}

``openKey`` (the group key) is set while the group takes new events: a unique partial
index on (userId, openKey) allows one open group per key, so concurrent events never open
two. ``windowStart`` is the time of the event that opened it; an event
``PULSE_NOTIFICATION_GROUP_SECONDS`` or more after it closes the group (unsets
``openKey``) and opens the next. ``createdAt`` is the latest growth (the list's order:
a group that grows moves to the top). ``actors`` are the most recent three, newest first.

Each actor counted in a group is a document of ``notification_contributions``::

    {_id, userId, groupId, actorId, actorName, sourceId, at, applied, appliedBy?}

unique on (userId, sourceId) (an event counts once, whichever group it would land in on a
redelivery) and on (userId, groupId, actorId) (an actor counts once per group: a like,
unlike and like again is one). That collection is what keeps ``count`` exact while the
group document stays small (a viral post's 100k likers are 100k small documents, not one
huge array), and what erasure reads to take an actor out of the groups they are in.

Counting is single-document steps (no transaction), exact however handlers of one event
race, time out or stop half-way:

1. find the open group, or open one (count 0 and read: lists skip ``count: 0``);
2. claim: insert the contribution (``applied: false``). A duplicate says the event or the
   actor is counted (``applied: true``: done) or being counted by a handler that is
   running or stopped (``applied: false``: go on with that contribution);
3. apply: ``$inc`` the count and ``$push`` a token of this application to ``unsettled``,
   only if no token of the contribution is there. Found one: another handler applied it
   (running, or stopped half-way), and this handler adopts that token instead;
4. settle: ``applied: true, appliedBy: token`` on the contribution, then the token out of
   ``unsettled``. A handler that applied but finds the contribution settled with another
   token (or gone: an erasure retracted it) takes its own application back, guarded by
   its token. So ``unsettled`` holds only applications not settled yet (a handful), and a
   pending contribution is counted exactly when a token of it is there.

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

from storage.mongo.errors import mongo_boundary

SHARD_KEY: dict[str, int] = {"userId": 1}

# The most recent actors a group shows.
RECENT_ACTORS_MAX = 3
# Rounds of the open-or-create race (each round is lost only to a concurrent change).
_ATTEMPTS = 8

# A group is opened with count 0 and read: lists and exports skip it until its first
# count (unread ones always have a count: a group is unread only once counted).
VISIBLE = {"count": {"$ne": 0}}


def _token_of(group: dict[str, Any], contribution_id: ObjectId) -> ObjectId | None:
    """The token of the (one) unsettled application of the contribution in the group."""
    return next((u["t"] for u in group.get("unsettled", []) if u["c"] == contribution_id), None)


class GroupsChanged(RuntimeError):
    """The group kept changing under one event (retry it)."""


@mongo_boundary
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
            token = ObjectId()
            group, mine = await self._apply(contribution, token)
            if group is None:
                # The group is gone (an erasure took its count to 0): count the event
                # afresh, unless a concurrent handler took the contribution over.
                if await self._drop_pending(contribution):
                    continue
                return None
            counted = token if mine else _token_of(group, contribution["_id"])
            if counted is None:
                continue  # the application seen was settled or taken back meanwhile: look again
            if await self._settle(contribution, counted):
                return group, contribution
            # Settled by another handler, or retracted by an erasure.
            settled = await self.contributions.find_one({"_id": contribution["_id"], "userId": user_id},
                                                        {"appliedBy": 1})
            if mine and (settled is None or settled.get("appliedBy") != token):
                await self._shrink(contribution, token=token)  # a second application: take it back
                return None
            return (group, contribution) if settled is not None else None
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
                    "windowStart": occurred_at, "count": 0, "actors": [], "unsettled": [], "read": True,
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
        if existing is None:
            return None  # retracted by an erasure just now: nothing to count
        if existing["applied"]:
            # Counted. (Its token may still be in the group, if its handler stopped right
            # after settling: take it out.)
            await self._forget_token(existing, existing.get("appliedBy"))
            return None
        return existing

    async def _apply(self, c: dict[str, Any], token: ObjectId) -> tuple[dict[str, Any] | None, bool]:
        """(The group after, True) when this application counted ``c``; (the group as it
        is, False) when another application of ``c`` is there already; (None, False) when
        the group is gone."""
        group = await self.groups.find_one_and_update(
            {"_id": c["groupId"], "userId": c["userId"], "unsettled.c": {"$ne": c["_id"]}},
            {"$inc": {"count": 1},
             "$push": {"unsettled": {"c": c["_id"], "t": token},
                       "actors": {"$each": [{"id": c["actorId"], "name": c["actorName"]}], "$position": 0,
                                  "$slice": RECENT_ACTORS_MAX}},
             "$set": {"read": False}, "$max": {"createdAt": c["at"]}},
            return_document=ReturnDocument.AFTER,
        )
        if group is not None:
            return group, True
        return await self.groups.find_one({"_id": c["groupId"], "userId": c["userId"]}), False

    async def _settle(self, c: dict[str, Any], token: ObjectId) -> bool:
        """Marks ``c`` counted by the application ``token``, then forgets the token; False
        when another handler settled it or an erasure retracted it."""
        result = await self.contributions.update_one(
            {"_id": c["_id"], "userId": c["userId"], "applied": False},
            {"$set": {"applied": True, "appliedBy": token}})
        if not result.matched_count:
            return False
        await self._forget_token(c, token)
        return True

    async def _forget_token(self, c: dict[str, Any], token: ObjectId | None) -> None:
        if token is not None:
            await self.groups.update_one({"_id": c["groupId"], "userId": c["userId"], "unsettled.t": token},
                                         {"$pull": {"unsettled": {"t": token}}})

    async def _drop_pending(self, c: dict[str, Any]) -> bool:
        result = await self.contributions.delete_one({"_id": c["_id"], "userId": c["userId"], "applied": False})
        return result.deleted_count == 1

    # --- taking actors out (erasure, and consumers that find an account gone) ---------

    async def retract(self, contribution: dict[str, Any]) -> None:
        """Takes the contribution out of its group: count − 1, the actor out of the recent
        ones (refilled from the group's other contributions), the group deleted when its
        count reaches 0. Idempotent: whoever deletes the contribution adjusts the group."""
        c = await self.contributions.find_one_and_delete({"_id": contribution["_id"], "userId": contribution["userId"]})
        if c is None:
            return
        group = await self.groups.find_one({"_id": c["groupId"], "userId": c["userId"]}, {"unsettled": 1})
        if group is None:
            return
        # Applications not settled yet, each taken back against its token (their handlers,
        # finding the contribution gone and the token too, change nothing more), then the
        # settled one, counted for sure and taken back by nobody else.
        tokens = [u["t"] for u in group.get("unsettled", []) if u["c"] == c["_id"]]
        settled = c.get("appliedBy") if c["applied"] else None
        for token in tokens:
            if not await self._shrink(c, token=token) and token == settled:
                await self._shrink(c)  # its settling handler forgot the token just now
        if settled is not None and settled not in tokens:
            await self._shrink(c)

    async def _shrink(self, c: dict[str, Any], *, token: ObjectId | None = None) -> bool:
        """Count − 1 and the actor out of the recent ones; with ``token``, only if that
        application is still there (it goes too). False when nothing changed."""
        query: dict[str, Any] = {"_id": c["groupId"], "userId": c["userId"]}
        pull: dict[str, Any] = {"actors": {"id": c["actorId"]}}
        if token is not None:
            query["unsettled.t"] = token
            pull["unsettled"] = {"t": token}
        group = await self.groups.find_one_and_update(query, {"$inc": {"count": -1}, "$pull": pull},
                                                      return_document=ReturnDocument.AFTER)
        if group is None:
            return False
        if group["count"] <= 0:
            await self.groups.delete_one({"_id": group["_id"], "userId": group["userId"], "count": {"$lte": 0}})
        else:
            await self._refill_actors(group)
        return True

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
