"""The catalogue of domain events: every event type the services write to the outbox,
and its payload (every id a string). Emitters and consumers name them by these constants.

Events are written to the outbox in the transaction of the change that caused them and
delivered at least once: every consumer must be idempotent (the bus also skips event ids
a consumer has already processed).
"""
from __future__ import annotations

USER_REGISTERED = "user.registered"  # {user_id, username, display_name}
USER_FOLLOWED = "user.followed"  # {follower_id, followee_id}
USER_UNFOLLOWED = "user.unfollowed"  # {follower_id, followee_id}
USER_ERASURE_REQUESTED = "user.erasure_requested"  # {user_id}
USER_ERASURE_RESTORED = "user.erasure_restored"  # {user_id}
USER_PURGED = "user.purged"  # {user_id}

POST_CREATED = "post.created"  # {post_id, author_id, created_at}
POST_DELETED = "post.deleted"  # {post_id, author_id}
POST_LIKED = "post.liked"  # {post_id, post_author_id, actor_id}
POST_UNLIKED = "post.unliked"  # {post_id, post_author_id, actor_id}
COMMENT_CREATED = "comment.created"  # {comment_id, post_id, post_author_id, actor_id}

EVENT_RSVP = "event.rsvp"  # {event_id, host_id, actor_id, status}
# {event_id, host_id, title, attendee_ids}; host_id is null when the purge of the host
# cancels it (the event then names no erased user).
EVENT_CANCELLED = "event.cancelled"

# No chat message event: messages live in MongoDB and reach their members through the
# messaging service (live push, offline notification); an outbox row per message would
# cost a PostgreSQL transaction per send for no consumer.
