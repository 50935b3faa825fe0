"""The notifications context: documents in MongoDB, created from domain events (and by
messaging for offline recipients), pushed live to the user's sockets as they are stored.

Likes of a post, comments on a post and new followers are grouped (API.md "Grouped
notifications"): one notification per recipient and target within
``notification_group_seconds``, counting distinct actors
(``storage/mongo/notification_groups.py``), pushed at most once per
``notification_push_coalesce_ms`` (``server/services/group_pushes.py``)."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any, AsyncIterator
from uuid import UUID

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_preferences import ReadPreference, _ServerMode

from kernel.cursors import Cursors, decode_keyset, keyset_cursor, page
from kernel.errors import NotFound
from kernel.ids import parse_object_id
from kernel.timefmt import iso, parse_iso
from server.bus.catalogue import (COMMENT_CREATED, EVENT_CANCELLED, EVENT_RSVP, POST_LIKED, USER_FOLLOWED,
                                  USER_REGISTERED)
from server.bus.types import Consumer, DomainEvent
from server.read_models.messaging import Message
from server.read_models.notifications import Notification, NotificationList
from server.services.group_pushes import GroupPushes
from server.services.ports import Push, Pusher
from server.services.privacy.contributions import ErasureStep, ExportSection, Page, keyset_pages
from server.services.users import UsersService
from storage.mongo.notification_groups import NotificationGroupsRepo
from storage.mongo.notifications import NotificationsRepo
from storage.mongo.values import mongo_now
from storage.redis.notification_push import PushWindowStore
from storage.redis.unread_counts import UnreadCountCache

log = logging.getLogger("pulse.notifications")

# Consumer names key durable queues and processed-event records: never rename.
CONSUMER_NAME = "notifications"

_METADATA_FIELDS = {"postId": "post_id", "actorId": "actor_id", "eventId": "event_id",
                    "conversationId": "conversation_id"}


# What a group's actors did, by notification type.
_GROUP_VERBS = {"like": "liked your post", "comment": "commented on your post", "follow": "started following you"}


def group_message(kind: str, count: int, names: list[str]) -> str:
    """"Ann liked your post", "Ann and Bob liked your post", "Ann and 4 others liked your post"."""
    verb = _GROUP_VERBS[kind]
    first = names[0] if names else "Someone"
    if count <= 1:
        return f"{first} {verb}"
    if count == 2 and len(names) == 2:
        return f"{first} and {names[1]} {verb}"
    others = count - 1
    return f"{first} and {others} {'other' if others == 1 else 'others'} {verb}"


def notification_dict(doc: dict[str, Any]) -> Notification:
    metadata = doc.get("metadata") or {}
    out: Notification = {
        "id": str(doc["_id"]),
        "type": doc["type"],
        "message": doc.get("message", ""),
        "read": bool(doc.get("read")),
        "created_at": iso(doc["createdAt"]),
        "metadata": {api: metadata[field] for field, api in _METADATA_FIELDS.items() if metadata.get(field)},
    }
    if "groupKey" in doc:
        actors = doc.get("actors") or []
        out["message"] = group_message(doc["type"], doc["count"], [a["name"] for a in actors])
        if actors:  # the most recent one, as a single notification names its actor
            out["metadata"]["actor_id"] = actors[0]["id"]
        out.update(group_key=doc["groupKey"], count=doc["count"], actor_ids=[a["id"] for a in actors])
    return out


def event_time(event: DomainEvent) -> datetime:
    """When the event happened (its outbox time), at MongoDB's millisecond precision."""
    moment = parse_iso(event.created_at)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class NotificationsService:
    def __init__(self, mongo: AsyncDatabase, users: UsersService, pusher: Pusher | None = None,
                 stale_reads: _ServerMode = ReadPreference.PRIMARY, *, cursors: Cursors,
                 group_seconds: float = 3600, push_windows: PushWindowStore | None = None,
                 unread_counts: UnreadCountCache | None = None) -> None:
        self.notifications_repo = NotificationsRepo(mongo, stale_reads)
        # Counts kept in the instance; every change below forgets the user's (everywhere).
        self.unread_counts = unread_counts
        self.groups_repo = NotificationGroupsRepo(mongo)
        self.group_window = timedelta(seconds=group_seconds)
        self.cursors = cursors
        self.users = users
        # Set by the real-time layer; without one, notifications are stored but not pushed.
        self.pusher = pusher
        # Without push windows every change of a group is pushed at once.
        self.group_pushes = GroupPushes(push_windows, self._push_group)

    async def stop(self) -> None:
        """Pushes what the coalescing still owes (at shutdown)."""
        await self.group_pushes.stop()

    # --- reading ----------------------------------------------------------------------

    async def list(self, user_id: str, *, unread_only: bool, limit: int, cursor: str | None) -> NotificationList:
        docs = await self.notifications_repo.list_for_user(user_id, unread_only=unread_only, limit=limit + 1,
                                                      after=decode_keyset(self.cursors, cursor))
        return page(docs, limit, keyset_cursor(self.cursors, "createdAt"), notification_dict)

    async def unread_count(self, user_id: str) -> int:
        if self.unread_counts is None:
            return await self.notifications_repo.count_unread(user_id)
        cached = self.unread_counts.get(user_id)
        if cached is not None:
            return cached
        token = self.unread_counts.fill_token()
        count = await self.notifications_repo.count_unread(user_id)
        await self.unread_counts.keep(user_id, count, token)
        return count

    async def _counts_changed(self, *user_ids: str) -> None:
        if self.unread_counts is not None:
            await self.unread_counts.forget(*user_ids)

    async def mark_read(self, user_id: str, notification_id: str) -> Notification:
        oid = parse_object_id(notification_id)
        doc = await self.notifications_repo.mark_read(user_id, oid) if oid is not None else None
        if doc is None:
            raise NotFound("No such notification.")
        await self._counts_changed(user_id)
        return notification_dict(doc)

    async def mark_all_read(self, user_id: str) -> int:
        updated = await self.notifications_repo.mark_all_read(user_id)
        await self._counts_changed(user_id)
        return updated

    # --- creating ---------------------------------------------------------------------

    async def notify(
        self, user_id: str, kind: str, message: str, *, source_id: str, post_id: str | None = None,
        actor_id: str | None = None, event_id: str | None = None, conversation_id: str | None = None,
    ) -> Notification | None:
        """Store a notification and push it; None (nothing stored or pushed) when this
        user already has one from ``source_id``."""
        created = await self.notify_many([user_id], kind, message, source_id=source_id, post_id=post_id,
                                         actor_id=actor_id, event_id=event_id, conversation_id=conversation_id)
        return created[0] if created else None

    async def notify_many(
        self, user_ids: list[str], kind: str, message: str, *, source_id: str, post_id: str | None = None,
        actor_id: str | None = None, event_id: str | None = None, conversation_id: str | None = None,
    ) -> list[Notification]:
        """The same notification for each user (the actor checked once for all of them);
        returns those stored and pushed, leaving out users who already had one from
        ``source_id``."""
        metadata = {k: v for k, v in (("postId", post_id), ("actorId", actor_id), ("eventId", event_id),
                                      ("conversationId", conversation_id)) if v}
        now = mongo_now()
        docs = [{"_id": ObjectId(), "userId": user_id, "type": kind, "message": message, "read": False,
                 "createdAt": now, "metadata": metadata, "sourceId": source_id} for user_id in dict.fromkeys(user_ids)]
        stored_docs = await self.notifications_repo.insert_new(docs)
        if not stored_docs:
            return []
        # Nothing for or about someone pending erasure or purged (an event still in flight
        # would recreate what the purge removed). Checked after the insert, in one query:
        # every purge step runs after the account is hidden, so either this sees them
        # gone and takes the documents back before anything is pushed, or the insert
        # came before the purge's notifications step, which deletes them.
        alive = await self.users.existing([*(d["userId"] for d in stored_docs), *([actor_id] if actor_id else [])])
        if actor_id and actor_id not in alive:
            if kind != "event_cancelled":
                await self.notifications_repo.delete_ids([d["_id"] for d in stored_docs])
                # A count taken between the insert and the delete must not be kept.
                await self._counts_changed(*(d["userId"] for d in stored_docs))
                return []
            # A cancelled event is still announced, anonymously.
            await self.notifications_repo.forget_actor([d["_id"] for d in stored_docs])
            for doc in stored_docs:
                doc["metadata"] = {k: v for k, v in doc["metadata"].items() if k != "actorId"}
        gone = [d["_id"] for d in stored_docs if d["userId"] not in alive]
        if gone:
            await self.notifications_repo.delete_ids(gone)
        # After the last write, before the pushes: a client told of a notification and
        # asking for its count at once gets the new one from this instance (from the
        # others within the near-cache lease).
        await self._counts_changed(*(d["userId"] for d in stored_docs))
        if gone:
            stored_docs = [d for d in stored_docs if d["userId"] in alive]
        stored = [(doc["userId"], notification_dict(doc)) for doc in stored_docs]
        # One push per recipient (each has its own notification id), sent together.
        await asyncio.gather(*(self._push(user_id, notification) for user_id, notification in stored))
        return [notification for _, notification in stored]

    async def _push(self, user_id: str, notification: Notification) -> None:
        if self.pusher is None:
            return
        try:
            await self.pusher.push([user_id], "notification:new", {"notification": notification})
        except Exception:  # noqa: BLE001 - stored is what matters; the client refetches over REST
            log.exception("pushing notification %s to %s failed", notification["id"], user_id)

    async def notify_group(self, event: DomainEvent, user_id: str, kind: str, group_key: str, *, actor_id: str,
                           post_id: str | None = None) -> Notification | None:
        """Counts the actor in the recipient's group for ``group_key`` and pushes the group
        (coalesced); None when nothing changed (the event or the actor was counted)."""
        added = await self.groups_repo.add(
            user_id=user_id, kind=kind, group_key=group_key, metadata={"postId": post_id} if post_id else {},
            actor_id=actor_id, actor_name=await self._name_of(actor_id), source_id=event.id,
            occurred_at=event_time(event), window=self.group_window, now=mongo_now(),
        )
        if added is None:
            return None
        group, contribution = added
        # As notify_many: nothing for or about someone pending erasure or purged, checked
        # after the write (a purge's notification steps run after the account is hidden).
        alive = await self.users.existing([user_id, actor_id])
        if user_id not in alive:
            await self.groups_repo.delete_group(user_id, group["_id"])
            await self._counts_changed(user_id)  # a count taken meanwhile must not be kept
            return None
        if actor_id not in alive:
            await self.groups_repo.retract(contribution)
            await self._counts_changed(user_id)
            return None
        # Counted, the group is unread: its recipient's count changed (before the push).
        await self._counts_changed(user_id)
        await self.group_pushes.changed(user_id, str(group["_id"]))
        return notification_dict(group)

    async def _push_group(self, user_id: str, group_id: str) -> None:
        """Pushes the group as it is now (nothing when it is gone)."""
        doc = await self.groups_repo.get(user_id, ObjectId(group_id))
        if doc is not None:
            await self._push(user_id, notification_dict(doc))

    async def _name_of(self, user_id: str) -> str:
        profiles = await self.users.get_public_many([user_id])
        profile = profiles.get(user_id)
        return profile["display_name"] if profile else "Someone"

    async def notify_message(self, recipient_ids: list[str], message: Message) -> None:
        """A ``message`` notification for recipients with no connected socket (messaging
        calls this after storing a message); one per (recipient, message)."""
        await self.notify_messages([(recipient_ids, message)])

    async def notify_messages(self, messages: list[tuple[list[str], Message]]) -> None:
        """``notify_message`` for several messages at once (messaging's sends written
        together): one look-up of the senders' names, one insert, one check of who still
        exists (as ``notify_many``), one push round trip."""
        wanted = [(r, m) for recipients, m in messages for r in dict.fromkeys(recipients) if r != m["sender_id"]]
        if not wanted:
            return
        senders = list(dict.fromkeys(m["sender_id"] for _, m in wanted))
        profiles = await self.users.get_public_many(senders)
        names = {s: profiles[s]["display_name"] if s in profiles else "Someone" for s in senders}
        now = mongo_now()
        docs = [{"_id": ObjectId(), "userId": user_id, "type": "message",
                 "message": f"New message from {names[m['sender_id']]}", "read": False, "createdAt": now,
                 "metadata": {"actorId": m["sender_id"], "conversationId": m["conversation_id"]},
                 "sourceId": f"message:{m['id']}"} for user_id, m in wanted]
        stored_docs = await self.notifications_repo.insert_new(docs)
        if not stored_docs:
            return
        # As notify_many: nothing for or from someone pending erasure or purged.
        alive = await self.users.existing([*{d["userId"] for d in stored_docs}, *senders])
        gone = {d["_id"] for d in stored_docs if d["userId"] not in alive or d["metadata"]["actorId"] not in alive}
        if gone:
            await self.notifications_repo.delete_ids(list(gone))
        # After the last write, before the pushes (as notify_many): the recipients' counts
        # changed, and a count taken between the insert and a delete must not be kept.
        await self._counts_changed(*dict.fromkeys(d["userId"] for d in stored_docs))
        if gone:
            stored_docs = [d for d in stored_docs if d["_id"] not in gone]
        if self.pusher is None or not stored_docs:
            return
        try:
            await self.pusher.push_many([Push([d["userId"]], "notification:new", {"notification": notification_dict(d)})
                                         for d in stored_docs])
        except Exception:  # noqa: BLE001 - stored is what matters; the clients refetch over REST
            log.exception("pushing %d message notifications failed", len(stored_docs))

    # --- domain event handlers (at least once: idempotent on the event id) -------------

    async def on_user_registered(self, event: DomainEvent) -> None:
        p = event.payload
        await self.notify(p["user_id"], "welcome", f"Welcome to Pulse, {p.get('display_name') or p['username']}!",
                          source_id=event.id)

    async def on_post_liked(self, event: DomainEvent) -> None:
        p = event.payload
        if p["actor_id"] == p["post_author_id"]:
            return
        await self.notify_group(event, p["post_author_id"], "like", f"like:{p['post_id']}", actor_id=p["actor_id"],
                                post_id=p["post_id"])

    async def on_comment_created(self, event: DomainEvent) -> None:
        p = event.payload
        if p["actor_id"] == p["post_author_id"]:
            return
        await self.notify_group(event, p["post_author_id"], "comment", f"comment:{p['post_id']}",
                                actor_id=p["actor_id"], post_id=p["post_id"])

    async def on_user_followed(self, event: DomainEvent) -> None:
        p = event.payload
        if p["follower_id"] == p["followee_id"]:
            return
        await self.notify_group(event, p["followee_id"], "follow", f"follow:{p['followee_id']}",
                                actor_id=p["follower_id"])

    async def on_event_rsvp(self, event: DomainEvent) -> None:
        p = event.payload
        if p["actor_id"] == p["host_id"]:
            return
        name = await self._name_of(p["actor_id"])
        text = {"going": f"{name} is going to your event",
                "interested": f"{name} is interested in your event",
                "not_going": f"{name} is not going to your event"}.get(
            p.get("status"), f"{name} answered your event invitation")
        await self.notify(p["host_id"], "rsvp", text, source_id=event.id, event_id=p["event_id"],
                          actor_id=p["actor_id"])

    async def on_event_cancelled(self, event: DomainEvent) -> None:
        p = event.payload
        title = p.get("title") or "An event"
        attendees = [a for a in p.get("attendee_ids") or [] if a != p["host_id"]]
        await self.notify_many(attendees, "event_cancelled", f"{title} was cancelled", source_id=event.id,
                               event_id=p["event_id"], actor_id=p["host_id"])

    async def handle(self, event: DomainEvent) -> None:
        handler = {
            USER_REGISTERED: self.on_user_registered,
            POST_LIKED: self.on_post_liked,
            COMMENT_CREATED: self.on_comment_created,
            USER_FOLLOWED: self.on_user_followed,
            EVENT_RSVP: self.on_event_rsvp,
            EVENT_CANCELLED: self.on_event_cancelled,
        }.get(event.type)
        if handler is not None:
            await handler(event)

    def consumers(self) -> list[Consumer]:
        """For the event bus (gathered in ``create_app``): one consumer for every event that notifies someone."""
        return [Consumer(
            name=CONSUMER_NAME,
            event_types=(USER_REGISTERED, POST_LIKED, COMMENT_CREATED, USER_FOLLOWED, EVENT_RSVP,
                         EVENT_CANCELLED),
            handle=self.handle,
        )]

    # --- erasure and export (for the privacy context) ----------------------------------

    async def users_told_about(self, user_id: str) -> list[str]:
        """Whose replay logs can hold events about the user: the recipients of
        notifications about them, and of groups they are counted in, got those pushed."""
        return [*await self.notifications_repo.recipients_about(user_id),
                *await self.groups_repo.recipients_of_actor(user_id)]

    def erasure_steps(self) -> list[ErasureStep]:
        async def groups(uid: UUID) -> None:
            # Out of every group they are counted in (counts adjusted, recent actors
            # refilled, a group left with no one deleted); the contributions to their own
            # groups go (their groups are notifications: the next step deletes them).
            await self.groups_repo.retract_actor(str(uid))
            await self.groups_repo.delete_for_recipient(str(uid))
            if self.unread_counts is not None:
                await self.unread_counts.forget_all()  # groups emptied: whose counts fell is not known

        async def for_and_about(uid: UUID) -> None:
            await self.notifications_repo.delete_for_or_about(str(uid))
            if self.unread_counts is not None:
                await self.unread_counts.forget_all()  # whose counts fell is not known one by one

        return [ErasureStep("notifications.groups", groups),
                ErasureStep("notifications.for_and_about", for_and_about)]

    def export_sections(self) -> list[ExportSection]:
        def pages(uid: UUID) -> AsyncIterator[Page]:
            return keyset_pages(lambda after, limit: self.notifications_repo.page_for_user(str(uid), after, limit), None,
                                lambda doc: (doc["createdAt"], doc["_id"]), notification_dict)

        return [ExportSection("notifications", pages)]
