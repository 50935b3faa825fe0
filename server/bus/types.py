"""Domain events: what they carry, and the consumer interface.

The catalogue (event type -> payload; every id a string):
- user.registered     {user_id, username, display_name}
- post.created        {post_id, author_id, created_at}
- post.deleted        {post_id, author_id}
- post.liked          {post_id, post_author_id, actor_id}
- post.unliked        {post_id, post_author_id, actor_id}
- comment.created     {comment_id, post_id, post_author_id, actor_id}
- user.followed       {follower_id, followee_id}
- user.unfollowed     {follower_id, followee_id}
- event.rsvp          {event_id, host_id, actor_id, status}
- event.cancelled     {event_id, host_id, title, attendee_ids} (host_id null when the
                      purge of the host cancels it: the event names no erased user)
- message.sent        {message_id, conversation_id, sender_id, recipient_ids}
- user.erasure_requested {user_id}; user.erasure_restored {user_id}; user.purged {user_id}

Events are written to the outbox in the transaction of the change that caused them and
delivered at least once: every consumer must be idempotent (the bus also skips event ids
a consumer has already processed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

# The payload fields that hold a user id, and those holding lists of user ids: erasure
# finds the events naming a user through these only (``OutboxRepo.erase_user``).
USER_ID_FIELDS = ("user_id", "author_id", "post_author_id", "actor_id", "follower_id", "followee_id",
                  "host_id", "sender_id")
USER_ID_LIST_FIELDS = ("attendee_ids", "recipient_ids")
# Deleted from the outbox once delivered instead of kept for the retention: they name a
# user who is gone by the time they are published.
FORGOTTEN_ON_DELIVERY = frozenset({"user.purged"})


@dataclass(frozen=True)
class DomainEvent:
    id: str
    type: str
    payload: dict[str, Any]
    created_at: str  # ISO 8601 UTC


@dataclass(frozen=True)
class Consumer:
    """A named handler of some event types. The name keys its durable queue and its
    record of processed event ids, so it must never change once deployed."""

    name: str
    event_types: tuple[str, ...]
    handle: Callable[[DomainEvent], Awaitable[None]]
