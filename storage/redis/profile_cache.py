"""Cache-aside store of public profiles (JSON), invalidated whenever a profile or its
counters change, so others see a change at once.

With near-caches (``storage.near_cache``) profiles found are also kept in the instance;
an invalidation publishes the user ids so that every instance forgets them too (its own
at once, the others within the near-cache lease)."""
from __future__ import annotations

import logging
from typing import Any

import orjson
import redis.asyncio as aioredis

from storage.near_cache import PROFILES, NearCache, forget_frame
from storage.redis.client import REDIS_UNAVAILABLE, Keys, redis_boundary

log = logging.getLogger("pulse.redis")


@redis_boundary
class ProfileCache:
    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_seconds: int, *,
                 near: NearCache | None = None, near_own: NearCache | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl_seconds
        # Public profiles, and the owners' own (with the email, from PostgreSQL): both
        # forgotten by every invalidation of the user.
        self.near = near
        self.near_own = near_own
        # Invalidations that could not reach Redis: Redis keeps its data across a restart,
        # so these are deleted as soon as it answers again, before a cached entry is read.
        self._pending_invalidations: set[str] = set()

    async def _retry_pending_invalidations(self) -> None:
        if self._pending_invalidations:
            pending = list(self._pending_invalidations)
            await self._invalidate_everywhere(pending)
            self._pending_invalidations.difference_update(pending)

    def near_profile(self, user_id: str) -> dict[str, Any] | None:
        """A public profile this instance read lately (no round trip), if any."""
        return self.near.get(user_id) if self.near is not None else None

    async def get(self, user_id: str) -> dict[str, Any] | None:
        token = self.near.fill_token() if self.near is not None else 0
        try:
            await self._retry_pending_invalidations()
            raw = await self.redis.get(self.keys.profile(user_id))
        except REDIS_UNAVAILABLE as exc:
            log.warning("profile cache read failed: %s", exc)
            return None
        if not raw:
            return None
        profile = orjson.loads(raw)
        if self.near is not None:
            self.near.put(user_id, profile, token)
        return profile

    def near_fill_token(self) -> int:
        """Take before reading a profile from PostgreSQL that ``put`` may keep near."""
        return self.near.fill_token() if self.near is not None else 0

    def near_own_profile(self, user_id: str) -> dict[str, Any] | None:
        return self.near_own.get(user_id) if self.near_own is not None else None

    def near_own_fill_token(self) -> int:
        return self.near_own.fill_token() if self.near_own is not None else 0

    def keep_own_near(self, profile: dict[str, Any], token: int) -> None:
        """The owner's own profile as read from PostgreSQL (``token`` taken before)."""
        if self.near_own is not None:
            self.near_own.put(profile["id"], profile, token)

    async def get_id_for_username(self, username: str) -> str | None:
        try:
            raw = await self.redis.get(self.keys.username(username.lower()))
        except REDIS_UNAVAILABLE:
            return None
        return raw.decode() if raw else None

    async def put(self, profile: dict[str, Any], near_token: int | None = None) -> None:
        """``near_token``: from ``near_fill_token`` before the read, to keep it near too."""
        if self.near is not None and near_token is not None:
            self.near.put(profile["id"], profile, near_token)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.profile(profile["id"]), orjson.dumps(profile), ex=self.ttl)
                pipe.set(self.keys.username(profile["username"].lower()), profile["id"], ex=self.ttl)
                await pipe.execute()
        except REDIS_UNAVAILABLE as exc:
            log.warning("profile cache write failed: %s", exc)

    async def invalidate(self, *user_ids: str) -> None:
        """Out of Redis and, in the same round trip, out of every instance's near-caches."""
        if not user_ids:
            return
        ids = [str(u) for u in user_ids]
        for near in (self.near, self.near_own):
            if near is not None:
                near.forget(ids)
        try:
            await self._invalidate_everywhere(ids)
        except REDIS_UNAVAILABLE as exc:
            self._pending_invalidations.update(str(u) for u in user_ids)
            log.error("profile cache invalidation failed; will retry when Redis answers: %s", exc)

    async def _invalidate_everywhere(self, user_ids: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(*(self.keys.profile(u) for u in user_ids))
            pipe.publish(self.keys.fanout_channel(), forget_frame(PROFILES, user_ids))
            await pipe.execute()

    async def forget_username(self, username: str) -> None:
        try:
            await self.redis.delete(self.keys.username(username.lower()))
        except REDIS_UNAVAILABLE as exc:
            log.error("username cache invalidation failed: %s", exc)
