"""Presence records: which users each live instance holds sockets for.

- ``presence_instances``: sorted set, instance key -> time (epoch seconds) until which
  the instance counts as alive; refreshed by its heartbeat.
- ``presence_users(instance)``: set of the user ids with a socket on that instance,
  expiring with the instance's heartbeat.

An instance that dies without cleaning up (SIGKILL) stops counting when its entry's
time passes, and its set expires on its own. Instance clocks are assumed to agree to
well within the TTL.
"""
from __future__ import annotations

import time

import redis.asyncio as aioredis

from storage.redis.client import Keys, redis_boundary


@redis_boundary
class PresenceStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = max(1, int(ttl_seconds))

    async def add_users(self, instance: str, user_ids: list[str]) -> None:
        if not user_ids:
            return
        users_key = self.keys.presence_users(instance)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(users_key, *user_ids)
            pipe.expire(users_key, self.ttl)
            pipe.zadd(self.keys.presence_instances(), {instance: time.time() + self.ttl})
            await pipe.execute()

    async def remove_user(self, instance: str, user_id: str) -> None:
        await self.redis.srem(self.keys.presence_users(instance), user_id)

    async def heartbeat(self, instance: str) -> bool:
        """Extends the instance's records; False when its user set is gone (Redis lost
        it) and the caller must write it again."""
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.presence_instances(), {instance: now + self.ttl})
            pipe.expire(self.keys.presence_users(instance), self.ttl)
            # Dead instances' entries (their user sets have expired already).
            pipe.zremrangebyscore(self.keys.presence_instances(), "-inf", now - self.ttl)
            _, extended, _ = await pipe.execute()
        return bool(extended)

    async def online(self, user_ids: list[str]) -> set[str]:
        if not user_ids:
            return set()
        instances = await self.redis.zrangebyscore(self.keys.presence_instances(), time.time(), "+inf")
        if not instances:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for instance in instances:
                pipe.smismember(self.keys.presence_users(instance.decode()), user_ids)
            answers = await pipe.execute()
        return {u for flags in answers for u, flag in zip(user_ids, flags) if flag}

    async def remove_user_everywhere(self, user_id: str) -> None:
        """Erasure: out of every instance's set of connected users (a crashed instance's
        set would otherwise keep the id until its TTL)."""
        async for key in self.redis.scan_iter(match=self.keys.presence_users("*"), count=1000):
            await self.redis.srem(key, user_id)

    async def remove_instance(self, instance: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.presence_instances(), instance)
            pipe.delete(self.keys.presence_users(instance))
            await pipe.execute()
