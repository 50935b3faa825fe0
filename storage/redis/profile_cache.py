"""Cache-aside store of public profiles (JSON), invalidated whenever a profile or its
counters change, so others see a change at once."""
from __future__ import annotations

import logging
from typing import Any

import orjson
import redis.asyncio as aioredis

from storage.redis.client import REDIS_UNAVAILABLE, Keys, redis_boundary

log = logging.getLogger("pulse.redis")


@redis_boundary
class ProfileCache:
    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl_seconds
        # Invalidations that could not reach Redis: Redis keeps its data across a restart,
        # so these are deleted as soon as it answers again, before a cached entry is read.
        self._pending_invalidations: set[str] = set()

    async def _retry_pending_invalidations(self) -> None:
        if self._pending_invalidations:
            pending = list(self._pending_invalidations)
            await self.redis.delete(*(self.keys.profile(u) for u in pending))
            self._pending_invalidations.difference_update(pending)

    async def get(self, user_id: str) -> dict[str, Any] | None:
        try:
            await self._retry_pending_invalidations()
            raw = await self.redis.get(self.keys.profile(user_id))
        except REDIS_UNAVAILABLE as exc:
            log.warning("profile cache read failed: %s", exc)
            return None
        return orjson.loads(raw) if raw else None

    async def get_id_for_username(self, username: str) -> str | None:
        try:
            raw = await self.redis.get(self.keys.username(username.lower()))
        except REDIS_UNAVAILABLE:
            return None
        return raw.decode() if raw else None

    async def put(self, profile: dict[str, Any]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.profile(profile["id"]), orjson.dumps(profile), ex=self.ttl)
                pipe.set(self.keys.username(profile["username"].lower()), profile["id"], ex=self.ttl)
                await pipe.execute()
        except REDIS_UNAVAILABLE as exc:
            log.warning("profile cache write failed: %s", exc)

    async def invalidate(self, *user_ids: str) -> None:
        if not user_ids:
            return
        try:
            await self.redis.delete(*(self.keys.profile(str(u)) for u in user_ids))
        except REDIS_UNAVAILABLE as exc:
            self._pending_invalidations.update(str(u) for u in user_ids)
            log.error("profile cache invalidation failed; will retry when Redis answers: %s", exc)

    async def forget_username(self, username: str) -> None:
        try:
            await self.redis.delete(self.keys.username(username.lower()))
        except REDIS_UNAVAILABLE as exc:
            log.error("username cache invalidation failed: %s", exc)
