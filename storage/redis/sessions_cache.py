"""Write-through cache of live sessions: token hash -> user id, with a TTL.

PostgreSQL is the source of truth: a Redis restart logs no one out, and a Redis outage
only makes authentication slower (every lookup goes to PostgreSQL).
"""
from __future__ import annotations

import logging

import redis.asyncio as aioredis

from storage.redis.client import REDIS_UNAVAILABLE, Keys, redis_boundary

log = logging.getLogger("pulse.redis")


@redis_boundary
class SessionsCache:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        # Revocations that could not reach Redis: dropped as soon as it answers again,
        # before any cached entry is trusted (while Redis is down nobody reads the cache).
        self._pending_drops: set[bytes] = set()

    async def get_user_id(self, token_hash: bytes) -> str | None:
        try:
            if self._pending_drops:
                pending = list(self._pending_drops)
                await self.redis.delete(*(self.keys.session(h.hex()) for h in pending))
                self._pending_drops.difference_update(pending)
            value = await self.redis.get(self.keys.session(token_hash.hex()))
        except REDIS_UNAVAILABLE as exc:
            log.warning("session cache read failed, using PostgreSQL: %s", exc)
            return None
        return value.decode() if value else None

    async def cached_among(self, token_hashes: list[bytes]) -> set[bytes]:
        """Those of ``token_hashes`` with a cache entry (each one a live session)."""
        if not token_hashes:
            return set()
        values = await self.redis.mget([self.keys.session(h.hex()) for h in token_hashes])
        return {h for h, v in zip(token_hashes, values) if v is not None and h not in self._pending_drops}

    async def put(self, token_hash: bytes, user_id: str, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            return
        try:
            await self.redis.set(self.keys.session(token_hash.hex()), user_id, ex=ttl_seconds)
        except REDIS_UNAVAILABLE as exc:
            log.warning("session cache write failed: %s", exc)

    async def put_many(self, entries: list[tuple[bytes, str, int]]) -> None:
        """``put`` for several (token hash, user id, ttl seconds) in one round trip."""
        entries = [e for e in entries if e[2] > 0]
        if not entries:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for token_hash, user_id, ttl_seconds in entries:
                    pipe.set(self.keys.session(token_hash.hex()), user_id, ex=ttl_seconds)
                await pipe.execute()
        except REDIS_UNAVAILABLE as exc:
            log.warning("session cache write failed: %s", exc)

    async def drop(self, *token_hashes: bytes) -> None:
        if not token_hashes:
            return
        try:
            await self.redis.delete(*(self.keys.session(h.hex()) for h in token_hashes))
        except REDIS_UNAVAILABLE as exc:
            self._pending_drops.update(token_hashes)
            log.error("could not drop revoked sessions from the cache; will retry when Redis answers: %s", exc)
