"""Read-your-own-writes across instances: after a user's PostgreSQL write commits, the
primary's WAL position is kept here; a lag-tolerant read on behalf of that user goes to
the replica only once the replica has replayed past it. Shared in Redis, so the instance
that serves the next request need not be the one that took the write.
"""
from __future__ import annotations

from typing import Iterable

import redis.asyncio as aioredis

from storage.redis.client import Keys, redis_boundary

# Longer than any lag the replica may have and still serve reads (PULSE_PG_REPLICA_MAX_LAG_MS):
# past it, the replica has replayed the write or is lagging (and not read from) anyway.
WRITE_MARK_TTL_MS = 60_000

# Keeps the highest position: two instances marking the same user at once never lower it.
_MARK = """
for _, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key) or '0')
  if tonumber(ARGV[1]) > current then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    redis.call('PEXPIRE', key, ARGV[2])
  end
end
return 1
"""


@redis_boundary
class WriteMarkStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._mark = redis.register_script(_MARK)

    async def mark(self, user_ids: Iterable[str], position: int) -> None:
        """Raises redis errors (the caller decides what an unmarked write means)."""
        keys = [self.keys.pg_write_mark(u) for u in set(user_ids)]
        if keys:
            await self._mark(keys=keys, args=[position, WRITE_MARK_TTL_MS])

    async def newest(self, user_ids: Iterable[str]) -> int:
        """The highest position marked for these users (0: none lately). Raises redis errors."""
        keys = [self.keys.pg_write_mark(u) for u in set(user_ids)]
        if not keys:
            return 0
        values = await self.redis.mget(keys)
        return max((int(v) for v in values if v is not None), default=0)
