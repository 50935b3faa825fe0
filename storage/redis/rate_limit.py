"""Fixed-window counters in Redis for rate limits."""
from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from storage.redis.client import Keys


@dataclass(frozen=True)
class WindowState:
    count: int
    retry_after: int  # seconds until the window resets


class RateLimitCounters:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def hit(self, bucket: str, subject: str, window_seconds: int) -> WindowState:
        """Count one event in the subject's current window."""
        key = self.keys.rate(bucket, subject)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_seconds, nx=True)
            pipe.ttl(key)
            count, _, ttl = await pipe.execute()
        return WindowState(int(count), int(ttl) if ttl and ttl > 0 else window_seconds)

    async def add_hits(self, bucket: str, hits: dict[str, int], window_seconds: int) -> dict[str, WindowState]:
        """Count several subjects' events at once (one round trip): each subject's window
        starts with its first event. Returns every subject's window after the addition."""
        subjects = list(hits)
        async with self.redis.pipeline(transaction=True) as pipe:
            for subject in subjects:
                key = self.keys.rate(bucket, subject)
                pipe.incrby(key, hits[subject])
                pipe.expire(key, window_seconds, nx=True)
                pipe.ttl(key)
            replies = await pipe.execute()
        states = {}
        for i, subject in enumerate(subjects):
            count, _, ttl = replies[3 * i: 3 * i + 3]
            states[subject] = WindowState(int(count), int(ttl) if ttl and ttl > 0 else window_seconds)
        return states

    async def peek(self, bucket: str, subject: str) -> WindowState:
        key = self.keys.rate(bucket, subject)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.ttl(key)
            count, ttl = await pipe.execute()
        return WindowState(int(count or 0), int(ttl) if ttl and ttl > 0 else 0)

    async def reset(self, bucket: str, subject: str) -> None:
        await self.redis.delete(self.keys.rate(bucket, subject))
