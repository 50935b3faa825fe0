"""Home feeds in Redis: one sorted set per user, members ``author_id:post_id`` scored by
the post's creation time (epoch seconds), capped at the newest N.

A feed holds a marker member (score 0, never returned) once it has been built from
PostgreSQL; a feed without it (never built, evicted by its TTL, or lost with Redis) is
rebuilt on the next read. Fan-out adds to a feed whether or not it is built, and a
rebuild merges into what is there, so a post fanned out while a rebuild is in flight is
not lost.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from storage.redis.client import Keys, redis_boundary

BUILT = "~built"
_FANOUT_BATCH = 500

# KEYS: feeds; ARGV: score, member, cap, ttl.
_ADD = """
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[1], ARGV[2])
  redis.call('ZREMRANGEBYRANK', key, 1, -(tonumber(ARGV[3]) + 1))
  redis.call('EXPIRE', key, ARGV[4])
end
return #KEYS
"""

# KEYS[1]: feed; ARGV: marker ('' = leave unbuilt), cap, ttl, then score, member pairs.
# Rank 0 is the marker (score 0) when there is one: trimming starts at rank 1.
_MERGE = """
for i = 4, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], 0, ARGV[1]) end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 1, -(tonumber(ARGV[2]) + 1))
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
"""

# KEYS[1]: feed; ARGV[1]: member prefix ("author_id:").
_REMOVE_PREFIX = """
local removed = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, 1, #ARGV[1]) == ARGV[1] then
    redis.call('ZREM', KEYS[1], member)
    removed = removed + 1
  end
end
return removed
"""

# KEYS[1]: feed; ARGV: max score ('+inf' for the first page), cursor member ('' for none),
# count, marker, ttl. Nil when the feed is not built; else member, score pairs, newest
# first, from max down, including the entries tied with the cursor (the caller skips
# those at or above it).
_PAGE = """
if not redis.call('ZSCORE', KEYS[1], ARGV[4]) then return false end
redis.call('EXPIRE', KEYS[1], ARGV[5])
local ties = 0
if ARGV[2] ~= '' then ties = redis.call('ZCOUNT', KEYS[1], ARGV[1], ARGV[1]) end
return redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '(0', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]) + ties)
"""


@dataclass(frozen=True)
class FeedEntry:
    author_id: str
    post_id: str
    score: str  # as Redis wrote it: round-trips exactly through a cursor

    @property
    def member(self) -> str:
        return f"{self.author_id}:{self.post_id}"


def member(author_id: str, post_id: str) -> str:
    return f"{author_id}:{post_id}"


@redis_boundary
class FeedCache:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, max_items: int, ttl_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.max_items = max_items
        self.ttl = ttl_seconds
        self._add = redis.register_script(_ADD)
        self._merge = redis.register_script(_MERGE)
        self._remove_prefix = redis.register_script(_REMOVE_PREFIX)
        self._page = redis.register_script(_PAGE)

    async def add_to_feeds(self, user_ids: list[str], author_id: str, post_id: str, score: float) -> None:
        for start in range(0, len(user_ids), _FANOUT_BATCH):
            batch = [self.keys.feed(u) for u in user_ids[start:start + _FANOUT_BATCH]]
            await self._add(keys=batch, args=[repr(score), member(author_id, post_id), self.max_items, self.ttl])

    async def remove_from_feeds(self, user_ids: list[str], author_id: str, post_id: str) -> None:
        gone = member(author_id, post_id)
        for start in range(0, len(user_ids), _FANOUT_BATCH):
            async with self.redis.pipeline(transaction=False) as pipe:
                for u in user_ids[start:start + _FANOUT_BATCH]:
                    pipe.zrem(self.keys.feed(u), gone)
                await pipe.execute()

    async def remove_author(self, user_id: str, author_id: str) -> int:
        return await self._remove_prefix(keys=[self.keys.feed(user_id)], args=[f"{author_id}:"])

    async def merge(self, user_id: str, entries: list[tuple[str, str, float]], *, built: bool) -> None:
        """Adds (author_id, post_id, score) entries; ``built`` marks the feed complete."""
        args: list = [BUILT if built else "", self.max_items, self.ttl]
        for author_id, post_id, score in entries:
            args += [repr(score), member(author_id, post_id)]
        await self._merge(keys=[self.keys.feed(user_id)], args=args)

    async def page(self, user_id: str, *, after: tuple[str, str] | None, count: int) -> list[FeedEntry] | None:
        """Up to ``count`` entries after the cursor (score, member), newest first; None
        when the feed is not built."""
        max_score, cursor_member = after if after else ("+inf", "")
        raw = await self._page(keys=[self.keys.feed(user_id)],
                               args=[max_score, cursor_member, count, BUILT, self.ttl])
        if raw is None:
            return None
        entries = []
        for i in range(0, len(raw), 2):
            name = raw[i].decode() if isinstance(raw[i], bytes) else raw[i]
            score = raw[i + 1].decode() if isinstance(raw[i + 1], bytes) else str(raw[i + 1])
            if after and float(score) == float(max_score) and name >= cursor_member:
                continue  # at or before the cursor among equal scores
            author_id, _, post_id = name.partition(":")
            entries.append(FeedEntry(author_id, post_id, score))
        return entries[:count]

    async def drop(self, user_id: str) -> None:
        await self.redis.delete(self.keys.feed(user_id))
