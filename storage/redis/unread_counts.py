"""Users' unread notification counts, kept in the instance (a near-cache, see
``storage.near_cache``); MongoDB holds the notifications and counts them on a miss.

Redis holds no copy: it carries the invalidations. Every change to a user's notifications
(stored, read, erased) forgets the count here at once and, through the fan-out channel, on
every instance within the near-cache lease. A notification that expires (MongoDB's TTL
index) changes a count unannounced: the near-cache's TTL bounds how long that shows.
"""
from __future__ import annotations

import logging

import redis.asyncio as aioredis

from storage.near_cache import UNREAD_COUNTS, NearCache, forget_all_frame, forget_frame
from storage.redis.client import REDIS_UNAVAILABLE, Keys, redis_boundary

log = logging.getLogger("pulse.redis")


@redis_boundary
class UnreadCountCache:
    def __init__(self, redis: aioredis.Redis, keys: Keys, near: NearCache) -> None:
        self.redis = redis
        self.keys = keys
        self.near = near
        # Invalidations that could not be published: sent again before the next count is
        # kept (until then nothing is stored here, so this instance serves no stale count).
        self._pending: set[str] = set()
        self._pending_all = False

    def get(self, user_id: str) -> int | None:
        return self.near.get(user_id)

    def fill_token(self) -> int:
        """Take before counting in MongoDB what ``keep`` will store."""
        return self.near.fill_token()

    async def keep(self, user_id: str, count: int, token: int) -> None:
        if self._pending or self._pending_all:
            if not await self._publish_pending():
                return
        self.near.put(user_id, count, token)

    async def forget(self, *user_ids: str) -> None:
        """After a change to these users' notifications."""
        ids = list(dict.fromkeys(str(u) for u in user_ids))
        if not ids:
            return
        self.near.forget(ids)
        self._pending.update(ids)
        await self._publish_pending()

    async def forget_all(self) -> None:
        """After a change whose users are not known one by one (an erasure's step)."""
        self.near.clear()
        self._pending_all = True
        await self._publish_pending()

    async def _publish_pending(self) -> bool:
        pending, everything = list(self._pending), self._pending_all
        try:
            frame = forget_all_frame(UNREAD_COUNTS) if everything else forget_frame(UNREAD_COUNTS, pending)
            await self.redis.publish(self.keys.fanout_channel(), frame)
        except REDIS_UNAVAILABLE as exc:
            log.error("could not publish an unread-count invalidation; will retry: %s", exc)
            return False
        self._pending.difference_update(pending)
        if everything:
            self._pending_all = False
        return True
