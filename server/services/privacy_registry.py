"""What each context contributes to the privacy framework: erasure steps (run in this
order by the purge saga, before the final deletion of the users row) and export
sections (written in this order after account, sessions and audit).

To plug a context in, add its entries to the two lists below. A step must be
idempotent and keep counters on other users exact (delete the rows and adjust the
counters in one transaction); a section reads its store page by page
(``keyset_pages``), with no secrets and nothing private to other users.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from kernel.timefmt import iso
from server.services.messaging import message_dict
from server.services.notifications import notification_dict
from server.services.privacy import ErasureStep, ExportSection, keyset_pages
from server.bus.types import USER_ID_FIELDS, USER_ID_LIST_FIELDS
from storage.postgres.repos.events import EventsRepo, RsvpsRepo
from storage.postgres.repos.follows import FollowsRepo
from storage.postgres.repos.outbox import OutboxRepo
from storage.postgres.repos.posts import CommentsRepo, LikesRepo, PostsRepo
from storage.postgres.repos.sessions import SessionsRepo
from storage.postgres.repos.users import UsersRepo
from storage.mongo.conversations import ConversationsRepo
from storage.mongo.messages import MessagesRepo
from storage.mongo.notifications import NotificationsRepo
from storage.redis.client import Keys
from storage.redis.privacy import RedisErasure

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from pymongo.asynchronous.database import AsyncDatabase

    from kernel.settings import Settings
    from server.services import Services
    from storage.postgres.pool import Database

log = logging.getLogger("pulse.privacy")


@dataclass(frozen=True)
class PrivacyDeps:
    db: "Database"
    mongo: "AsyncDatabase"
    redis: "aioredis.Redis"
    keys: Keys
    settings: "Settings"
    services: "Services"


def build_erasure_steps(d: PrivacyDeps) -> list[ErasureStep]:
    # Contexts' content first, the account's own traces last (the users row itself is
    # the saga's final step).
    # Feeds before follows (the followers say whose feeds hold the user's posts), and
    # before posts (the feed entries name the author).
    return [*_feed_steps(d), *_posts_steps(d), *_social_steps(d), *_events_steps(d), *_messaging_steps(d),
            *_users_steps(d)]


def build_export_sections(d: PrivacyDeps) -> list[ExportSection]:
    # account, sessions and audit are written by PrivacyService itself.
    return [*_posts_sections(d), *_social_sections(d), *_events_sections(d), *_messaging_sections(d)]


def _pg_pages(d: PrivacyDeps, fetch, render, id_column: str = "id"):
    """Export pages from a PostgreSQL keyset query ``fetch(conn, uid, after, limit)``
    ordered by (created_at, <id_column>): one pooled connection per page."""
    def pages(uid: UUID):
        async def page(after, limit):
            async with d.db.read() as conn:
                return await fetch(conn, uid, after, limit)

        return keyset_pages(page, None, lambda r: (r["created_at"], r[id_column]), render)

    return pages


# --- posts, comments, likes (PostgreSQL; the popular ranking in Redis) -------------------

POST_DELETE_BATCH = 500


def _posts_steps(d: PrivacyDeps) -> list[ErasureStep]:
    posts_repo, comments_repo, likes_repo = PostsRepo(), CommentsRepo(), LikesRepo()

    async def likes(uid: UUID) -> None:
        # Deleted with the like counts of others' posts adjusted, in one statement.
        async with d.db.transaction() as conn:
            changed = await likes_repo.delete_all_by_user(conn, uid)
        if changed:
            await d.services.posts.rebuild_popular()

    async def comments(uid: UUID) -> None:
        async with d.db.transaction() as conn:
            await comments_repo.delete_all_by_author(conn, uid)

    async def posts(uid: UUID) -> None:
        # In batches (each its own transaction): a prolific author never needs one huge
        # statement; a crash between batches just leaves fewer for the rerun.
        while True:
            async with d.db.transaction() as conn:
                gone = await posts_repo.delete_batch_by_author(conn, uid, POST_DELETE_BATCH)
            if gone:
                await d.services.posts.popular_set.remove(*(str(p) for p in gone))
            if len(gone) < POST_DELETE_BATCH:
                return

    return [ErasureStep("posts.likes", likes), ErasureStep("posts.comments", comments),
            ErasureStep("posts.posts", posts)]


def _posts_sections(d: PrivacyDeps) -> list[ExportSection]:
    posts_repo, comments_repo, likes_repo = PostsRepo(), CommentsRepo(), LikesRepo()
    return [
        ExportSection("posts", _pg_pages(d, posts_repo.page_by_author, lambda r: {
            "id": str(r["id"]), "body": r["body"], "created_at": iso(r["created_at"]),
            "like_count": r["like_count"], "comment_count": r["comment_count"]})),
        ExportSection("comments", _pg_pages(d, comments_repo.page_by_author, lambda r: {
            "id": str(r["id"]), "post_id": str(r["post_id"]), "body": r["body"],
            "created_at": iso(r["created_at"])})),
        ExportSection("likes", _pg_pages(d, likes_repo.page_by_user, lambda r: {
            "post_id": str(r["post_id"]), "created_at": iso(r["created_at"])}, id_column="post_id")),
    ]


# --- follows and feeds (PostgreSQL, Redis) ----------------------------------------------

def _feed_steps(d: PrivacyDeps) -> list[ErasureStep]:
    async def feeds(uid: UUID) -> None:
        # The user's entries out of every follower's feed (their own feed key goes with
        # redis.user_keys).
        for follower in await d.services.social.follower_ids(str(uid)):
            await d.services.feed.store.remove_author(follower, str(uid))

    return [ErasureStep("feed.entries", feeds)]


def _social_steps(d: PrivacyDeps) -> list[ErasureStep]:
    async def follows(uid: UUID) -> None:
        # Both directions, with the others' followers/following counters adjusted in the
        # same transaction (a rerun finds nothing to delete and changes no counter).
        async with d.db.transaction() as conn:
            others = await d.services.social.erase_user_follows(conn, str(uid))
        await d.services.users.invalidate_profiles(*others)

    return [ErasureStep("social.follows", follows)]


def _social_sections(d: PrivacyDeps) -> list[ExportSection]:
    follows_repo = FollowsRepo()

    def direction(name: str):
        async def fetch(conn, uid, after, limit):
            return await follows_repo.page_of_user(conn, uid, name, after, limit)

        return _pg_pages(d, fetch, lambda r: {"user_id": str(r["user_id"]), "since": iso(r["created_at"])},
                         id_column="user_id")

    return [ExportSection("following", direction("following")), ExportSection("followers", direction("followers"))]


# --- events and RSVPs (PostgreSQL) -----------------------------------------------------------

def _events_steps(d: PrivacyDeps) -> list[ErasureStep]:
    events_repo, rsvps_repo, outbox_repo = EventsRepo(), RsvpsRepo(), OutboxRepo()

    async def rsvps(uid: UUID) -> None:
        # Seats freed: going counts of others' events stay exact.
        async with d.db.transaction() as conn:
            await d.services.events.erase_user_rsvps(conn, str(uid))

    async def hosted(uid: UUID) -> None:
        # Each hosted event is cancelled as its host would: attendees are notified
        # (event.cancelled), one transaction per event.
        while True:
            async with d.db.read() as conn:
                ids = await events_repo.ids_by_host(conn, uid, 100)
            for event_id in ids:
                async with d.db.transaction() as conn:
                    attendee_ids = await rsvps_repo.attendee_ids(conn, event_id)
                    title = await events_repo.delete_returning_title(conn, event_id)
                    if title is not None:
                        await outbox_repo.add(conn, "event.cancelled", {
                            # No host: the event must not name the user being erased.
                            "event_id": str(event_id), "host_id": None, "title": title,
                            "attendee_ids": [str(a) for a in attendee_ids if a != uid],
                        })
            if len(ids) < 100:
                return

    return [ErasureStep("events.rsvps", rsvps), ErasureStep("events.hosted", hosted)]


def _events_sections(d: PrivacyDeps) -> list[ExportSection]:
    events_repo, rsvps_repo = EventsRepo(), RsvpsRepo()
    return [
        ExportSection("events_hosted", _pg_pages(d, events_repo.page_by_host, lambda r: {
            "id": str(r["id"]), "title": r["title"], "description": r["description"],
            "starts_at": iso(r["starts_at"]), "ends_at": iso(r["ends_at"]), "location": r["location"],
            "capacity": r["capacity"], "going_count": r["going_count"], "created_at": iso(r["created_at"])})),
        ExportSection("rsvps", _pg_pages(d, rsvps_repo.page_by_user, lambda r: {
            "event_id": str(r["event_id"]), "event_title": r["title"], "status": r["status"],
            "created_at": iso(r["created_at"]), "updated_at": iso(r["updated_at"])}, id_column="event_id")),
    ]


# --- messaging and notifications (MongoDB) --------------------------------------------------

def _messaging_steps(d: PrivacyDeps) -> list[ErasureStep]:
    conversations, messages, notifications = (ConversationsRepo(d.mongo), MessagesRepo(d.mongo),
                                              NotificationsRepo(d.mongo))
    redis_erasure = RedisErasure(d.redis, d.keys)

    async def offset_logs(uid: UUID) -> None:
        # Before the membership and notifications go: they say whose replay logs can hold
        # events about the user (their conversations' members get their messages and read
        # receipts; the recipients of notifications about them got those pushed). Only
        # those logs are read, and only entries naming the user by id are redacted.
        user_id = str(uid)
        owners: list[str] = []
        after = None
        while True:
            docs = await conversations.page_for_member(user_id, after, 500)
            for doc in docs:
                owners += doc["memberIds"]
            if len(docs) < 500:
                break
            after = docs[-1]["_id"]
        owners += await notifications.recipients_about(user_id)
        await redis_erasure.redact_in_offset_logs(user_id, owners)

    async def own_messages(uid: UUID) -> None:
        # Their messages go; the others' stay. Conversations showing one of theirs as the
        # last message show the newest remaining one instead.
        user_id = str(uid)
        await messages.delete_by_sender(user_id)
        for conversation_id in await conversations.ids_with_last_message_from(user_id):
            latest = await messages.latest_in_conversation(str(conversation_id))
            await conversations.replace_last_message(conversation_id, user_id, latest)

    async def membership(uid: UUID) -> None:
        for doc in await conversations.remove_member(str(uid)):
            if not doc.get("memberIds"):  # nobody left to read it
                await messages.delete_in_conversation(str(doc["_id"]))
                await conversations.delete(doc["_id"])

    async def notes(uid: UUID) -> None:
        await notifications.delete_for_or_about(str(uid))

    return [ErasureStep("realtime.offset_logs", offset_logs),
            ErasureStep("messaging.messages", own_messages), ErasureStep("messaging.membership", membership),
            ErasureStep("notifications.for_and_about", notes)]


def _messaging_sections(d: PrivacyDeps) -> list[ExportSection]:
    conversations, messages, notifications = (ConversationsRepo(d.mongo), MessagesRepo(d.mongo),
                                              NotificationsRepo(d.mongo))

    def conversation_pages(uid: UUID):
        # The user's view: members and title, not the others' read positions.
        return keyset_pages(lambda after, limit: conversations.page_for_member(str(uid), after, limit), None,
                            lambda doc: doc["_id"], lambda doc: {
                                "id": str(doc["_id"]), "kind": doc["kind"], "title": doc.get("title"),
                                "member_ids": list(doc["memberIds"]), "created_at": iso(doc["createdAt"])})

    def message_pages(uid: UUID):
        # Only the messages they sent: the others' are the others' data.
        return keyset_pages(lambda after, limit: messages.page_by_sender(str(uid), after, limit), None,
                            lambda doc: doc["_id"], message_dict)

    def notification_pages(uid: UUID):
        return keyset_pages(lambda after, limit: notifications.page_for_user(str(uid), after, limit), None,
                            lambda doc: (doc["createdAt"], doc["_id"]), notification_dict)

    return [ExportSection("conversations", conversation_pages), ExportSection("messages", message_pages),
            ExportSection("notifications", notification_pages)]


# --- users: sessions, Redis keys, delivered events ------------------------------------------

def _users_steps(d: PrivacyDeps) -> list[ErasureStep]:
    users_repo, sessions_repo, outbox_repo = UsersRepo(), SessionsRepo(), OutboxRepo()
    redis_erasure = RedisErasure(d.redis, d.keys)

    async def identity(uid: UUID) -> tuple[str, str] | None:
        """(username, email) while the users row exists (it goes last)."""
        async with d.db.read() as conn:
            row = await users_repo.get_by_id(conn, uid, include_pending=True)
        return (row["username"], row["email"]) if row else None

    async def sessions(uid: UUID) -> None:
        # Revoked at the erasure request already; again here in case one slipped in.
        async with d.db.transaction() as conn:
            hashes = await sessions_repo.delete_all_for_user(conn, uid)
        await d.services.users.sessions_cache.drop(*hashes)

    async def redis_user_keys(uid: UUID) -> None:
        names = await identity(uid)
        await redis_erasure.delete_user_keys(str(uid), *(names or ()))

    async def realtime_traces(uid: UUID) -> None:
        # The user's own log and presence went with their keys; here: their id in the
        # presence sets (others' replay logs: realtime.offset_logs).
        await redis_erasure.remove_from_presence(str(uid))

    async def events_naming_user(uid: UUID) -> None:
        # Every event whose id fields name the user, delivered or still in flight (see
        # OutboxRepo.erase_user); the purge's own user.purged goes once delivered.
        async with d.db.transaction() as conn:
            await outbox_repo.erase_user(conn, str(uid), list(USER_ID_FIELDS), list(USER_ID_LIST_FIELDS))

    return [
        ErasureStep("users.sessions", sessions),
        ErasureStep("redis.user_keys", redis_user_keys),
        ErasureStep("realtime.presence_and_logs", realtime_traces),
        ErasureStep("outbox.published", events_naming_user),
    ]
