"""The Redis connection pool and key naming."""
from __future__ import annotations

import redis.asyncio as aioredis
import redis.exceptions

from kernel.errors import StoreUnavailable
from kernel.settings import Settings
from storage.errors import translates_unavailable

# What Redis raises when it does not answer (down, unreachable, too slow): the store is
# unavailable, not the command wrong. OSError: a socket error the client did not wrap.
REDIS_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class RedisUnavailable(StoreUnavailable):
    """Redis did not answer. A type of its own because the services carry on without
    Redis where they can (caches, counters, presence): they catch this one."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__("redis", detail)


# The class decorator of every Redis adapter: REDIS_UNAVAILABLE leaves it as RedisUnavailable.
redis_boundary = translates_unavailable(REDIS_UNAVAILABLE, RedisUnavailable)


def create_redis(settings: Settings) -> aioredis.Redis:
    assert settings.redis_url, "redis_url is required"
    # A blocking pool: a burst beyond ``redis_pool_max`` (thousands of sockets connecting
    # at once) waits briefly for a free connection instead of failing at once.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_pool_max,
        timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=15,
        retry_on_timeout=False,
    )
    return aioredis.Redis.from_pool(pool)


class Keys:
    """Every Redis key and channel name, under the deployment's namespace."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    def session(self, token_hash_hex: str) -> str:
        return f"{self.ns}:sess:{token_hash_hex}"

    def profile(self, user_id: str) -> str:
        return f"{self.ns}:profile:{user_id}"

    def username(self, username_lower: str) -> str:
        return f"{self.ns}:uname:{username_lower}"

    def rate(self, bucket: str, subject: str) -> str:
        return f"{self.ns}:rl:{bucket}:{subject}"

    def popular_posts(self) -> str:
        """Sorted set: post id -> like count, for recent posts with likes."""
        return f"{self.ns}:popular:likes"

    def popular_posts_born(self) -> str:
        """Sorted set: post id -> creation time (epoch seconds), to age posts out."""
        return f"{self.ns}:popular:born"

    def popular_posts_fresh(self) -> str:
        """Present while the popular set is known to match PostgreSQL (rebuilt when gone)."""
        return f"{self.ns}:popular:fresh"

    # Real time (realtime/): per-user offset log, cross-instance fan-out, presence.
    def offset_log(self, user_id: str) -> str:
        return f"{self.ns}:rt:log:{user_id}"

    def appended_once(self, once_key: str) -> str:
        """Marks an offset-log append keyed by an id (it happens once)."""
        return f"{self.ns}:rt:once:{once_key}"

    def fanout_channel(self) -> str:
        return f"{self.ns}:rt:fanout"

    def presence_instances(self) -> str:
        return f"{self.ns}:rt:presence:instances"

    def presence_users(self, instance_key: str) -> str:
        return f"{self.ns}:rt:presence:users:{instance_key}"

    def pg_write_mark(self, user_id: str) -> str:
        """The primary's WAL position after a user's latest PostgreSQL write (see WriteMarkStore)."""
        return f"{self.ns}:pgw:{user_id}"

    def socket_slots(self, user_id: str) -> str:
        """Sorted set: the user's sockets on every instance -> time until which each counts."""
        return f"{self.ns}:rt:slots:{user_id}"

    def notification_push_window(self, user_id: str, group_id: str) -> str:
        """Held for the coalescing window after a grouped notification was pushed."""
        return f"{self.ns}:npush:{user_id}:{group_id}"

    def notification_push_pending(self, user_id: str, group_id: str) -> str:
        """Set when a grouped notification changed inside its window: a push is owed."""
        return f"{self.ns}:npush:pending:{user_id}:{group_id}"

    def notification_push_streak(self, user_id: str, group_id: str) -> str:
        """How many push windows in a row a grouped notification changed in (they lengthen)."""
        return f"{self.ns}:npush:streak:{user_id}:{group_id}"

    def feed(self, user_id: str) -> str:
        """A user's home feed: sorted set of ``author_id:post_id`` by creation time."""
        return f"{self.ns}:feed:{user_id}"

    def author_feed(self, author_id: str) -> str:
        """A large account's recent posts (hybrid fan-out): sorted set like a feed's."""
        return self.author_feed_prefix() + author_id

    def author_feed_prefix(self) -> str:
        return f"{self.ns}:authorfeed:"

    def merged_authors(self, user_id: str) -> str:
        """Set: the large accounts a user follows, whose author feeds their feed reads merge."""
        return f"{self.ns}:feedmerge:{user_id}"
