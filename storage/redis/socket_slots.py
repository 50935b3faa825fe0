"""Socket slots: how many sockets each user holds across all instances, for the
per-user cap (``sockets_per_user``).

``socket_slots(user)``: sorted set, ``<instance>:<sid>`` -> time (epoch seconds) until
which that socket counts. The holding instance refreshes its sockets' times on a
heartbeat and removes a socket's entry when it closes; an instance that dies without
cleanup stops counting once the times pass. A claim drops expired entries, counts and
adds in one script, so N connects at once never get more than the cap between them.
"""
from __future__ import annotations

import time

import redis.asyncio as aioredis

from storage.redis.client import Keys, redis_boundary

# KEYS[1] the user's set; ARGV: now, cap, ttl, member. 1 if claimed, 0 if the cap is reached.
CLAIM = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

REFRESH_BATCH = 500


@redis_boundary
class SocketSlotStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = max(1, int(ttl_seconds))
        self._claim = redis.register_script(CLAIM)

    async def claim(self, user_id: str, member: str, cap: int) -> bool:
        return bool(await self._claim(keys=[self.keys.socket_slots(user_id)],
                                      args=[time.time(), cap, self.ttl, member]))

    async def release(self, user_id: str, member: str) -> None:
        await self.redis.zrem(self.keys.socket_slots(user_id), member)

    async def refresh(self, members_by_user: dict[str, list[str]]) -> None:
        """Extends the given sockets' entries (only those still there: a socket released
        meanwhile is not brought back)."""
        until = time.time() + self.ttl
        items = list(members_by_user.items())
        for start in range(0, len(items), REFRESH_BATCH):
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id, members in items[start:start + REFRESH_BATCH]:
                    key = self.keys.socket_slots(user_id)
                    pipe.zadd(key, dict.fromkeys(members, until), xx=True)
                    pipe.expire(key, self.ttl)
                await pipe.execute()
