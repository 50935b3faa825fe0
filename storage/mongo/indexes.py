"""Every MongoDB index: (collection, keys, create_index options). Ensured at start.

Each sharded collection's indexes suit its shard key (``SHARD_KEYS``, and
deploy/mongo/shard-collections.js): a unique index starts with the shard key (the only
uniqueness a sharded cluster enforces), and one index starts with it to support it.
"""
from __future__ import annotations

from typing import Any

from kernel.settings import Settings
from storage.mongo import conversations, messages, notification_groups, notifications

# Collection -> shard key (None: not sharded). See the repositories for why each.
SHARD_KEYS: dict[str, dict[str, int] | None] = {
    "messages": messages.SHARD_KEY,
    "notifications": notifications.SHARD_KEY,
    "conversations": conversations.SHARD_KEY,
    "notification_contributions": notification_groups.SHARD_KEY,
}

IndexSpec = tuple[str, list[tuple[str, int]], dict[str, Any]]

INDEXES: list[IndexSpec] = [
    # Conversations of a user, most recent activity first (keyset on lastActivityAt, _id).
    ("conversations", [("memberIds", 1), ("lastActivityAt", -1), ("_id", -1)], {"name": "members_activity"}),
    # At most one direct conversation per pair: directKey = "<min id>:<max id>", only on directs.
    ("conversations", [("directKey", 1)], {
        "name": "direct_pair", "unique": True, "partialFilterExpression": {"directKey": {"$type": "string"}},
    }),
    # History pages newest first: the index gives the whole (createdAt, _id) order, so a page
    # reads its few entries instead of sorting the conversation in memory.
    ("messages", [("conversationId", 1), ("createdAt", -1), ("_id", -1)], {"name": "conversation_history_order"}),
    # Idempotent sends: a retried (sender, client id) to a conversation finds the stored
    # message. Led by the shard key: a sharded cluster enforces no other uniqueness.
    ("messages", [(key, 1) for key in messages.CLIENT_ID_KEYS], {"name": messages.CLIENT_ID_INDEX, "unique": True}),
    ("notifications", [("userId", 1), ("createdAt", -1), ("_id", -1)], {"name": "user_recent_order"}),
    ("notifications", [("userId", 1), ("read", 1)], {"name": "user_read"}),
    # One notification per (recipient, cause): consumers run at least once.
    ("notifications", [("userId", 1), ("sourceId", 1)], {
        "name": "user_source", "unique": True, "partialFilterExpression": {"sourceId": {"$type": "string"}},
    }),
    # Grouped notifications (storage/mongo/notification_groups.py): one open group per
    # (recipient, group key), so concurrent events never open two.
    ("notifications", [("userId", 1), ("openKey", 1)], {
        "name": "user_open_group", "unique": True, "partialFilterExpression": {"openKey": {"$type": "string"}},
    }),
    # An event counts once per recipient, an actor once per group.
    ("notification_contributions", [("userId", 1), ("sourceId", 1)], {"name": "user_source", "unique": True}),
    ("notification_contributions", [("userId", 1), ("groupId", 1), ("actorId", 1)], {
        "name": "user_group_actor", "unique": True}),
    # A group's most recent contributions (its recent actors refilled after an erasure).
    ("notification_contributions", [("userId", 1), ("groupId", 1), ("at", -1), ("_id", -1)],
     {"name": "user_group_recent"}),
    # Erasure: the groups an actor is counted in.
    ("notification_contributions", [("actorId", 1)], {"name": "actor"}),
    # Privacy: a user's own messages (export page by page, erasure), notifications
    # about a user (erasure), conversations whose last message is a user's (erasure).
    ("messages", [("senderId", 1), ("_id", 1)], {"name": "sender_export"}),
    ("notifications", [("metadata.actorId", 1)], {"name": "actor"}),
    ("conversations", [("lastMessage.senderId", 1)], {"name": "last_message_sender"}),
]


# Replaced by an index above under a new name; dropped at start where they still exist.
RETIRED_INDEXES: list[tuple[str, str]] = [
    ("messages", "conversation_history"),  # (conversationId, createdAt): sorted pages in memory
    ("notifications", "user_recent"),  # (userId, createdAt): the same
    ("messages", "sender_client_id"),  # (senderId, clientId) unique: not led by the shard key
]


def indexes_for(settings: Settings) -> list[IndexSpec]:
    """The static indexes plus those whose options come from settings."""
    return [
        *INDEXES,
        ("notifications", [("createdAt", 1)], {
            "name": "expire_after_ttl", "expireAfterSeconds": int(settings.notification_ttl_days * 86400),
        }),
        # A contribution outlives the latest growth of its group (its TTL clock) by the
        # group's window and a day, so an erasure always finds the actors a group shows.
        ("notification_contributions", [("at", 1)], {
            "name": "expire_after_ttl",
            "expireAfterSeconds": int(settings.notification_ttl_days * 86400
                                      + settings.notification_group_seconds + 86400),
        }),
    ]
