"""Write-through cache of live sessions: token hash -> user id, with a TTL.

PostgreSQL is the source of truth: a Redis restart logs no one out, and a Redis outage
only makes authentication slower (every lookup goes to PostgreSQL).

With a near-cache (``storage.near_cache``) a found session is also kept in the instance
for at most its remaining Redis TTL; a drop publishes its keys so that every instance
forgets them too (``NearCaches.apply``).
"""
from __future__ import annotations

import logging

import redis.asyncio as aioredis

from storage.near_cache import SESSIONS, NearCache, forget_frame
from storage.redis.client import REDIS_UNAVAILABLE, Keys, redis_boundary

log = logging.getLogger("pulse.redis")


@redis_boundary
class SessionsCache:
    def __init__(self, redis: aioredis.Redis, keys: Keys, near: NearCache | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.near = near
        # Revocations that could not reach Redis: dropped as soon as it answers again,
        # before any cached entry is trusted (while Redis is down nobody reads the cache).
        self._pending_drops: set[bytes] = set()

    def near_user_id(self, token_hash: bytes) -> str | None:
        """The user of a session this instance found lately (no round trip), if any."""
        return self.near.get(token_hash) if self.near is not None else None

    async def get_user_id(self, token_hash: bytes) -> str | None:
        token = self.near.fill_token() if self.near is not None else 0
        key = self.keys.session(token_hash.hex())
        try:
            if self._pending_drops:
                pending = list(self._pending_drops)
                await self._drop_everywhere([h.hex() for h in pending])
                self._pending_drops.difference_update(pending)
            if self.near is None:
                value, ttl_ms = await self.redis.get(key), 0
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    value, ttl_ms = await pipe.get(key).pttl(key).execute()
        except REDIS_UNAVAILABLE as exc:
            log.warning("session cache read failed, using PostgreSQL: %s", exc)
            return None
        if not value:
            return None
        user_id = value.decode()
        if self.near is not None and ttl_ms > 0:
            # Never kept past the Redis entry, whose TTL never passes the session's expiry.
            self.near.put(token_hash, user_id, token, ttl_ms / 1000)
        return user_id

    def keep_near(self, token_hash: bytes, user_id: str, ttl_seconds: float, token: int) -> None:
        """A session found in PostgreSQL (``token`` taken before the query)."""
        if self.near is not None:
            self.near.put(token_hash, user_id, token, ttl_seconds)

    def near_fill_token(self) -> int:
        return self.near.fill_token() if self.near is not None else 0

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
        """Out of Redis and, in the same round trip, out of every instance's near-cache."""
        if not token_hashes:
            return
        if self.near is not None:
            self.near.forget(token_hashes)
        try:
            await self._drop_everywhere([h.hex() for h in token_hashes])
        except REDIS_UNAVAILABLE as exc:
            self._pending_drops.update(token_hashes)
            log.error("could not drop revoked sessions from the cache; will retry when Redis answers: %s", exc)

    async def _drop_everywhere(self, hexes: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(*(self.keys.session(h) for h in hexes))
            pipe.publish(self.keys.fanout_channel(), forget_frame(SESSIONS, hexes))
            await pipe.execute()
