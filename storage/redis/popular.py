"""The popular posts: recent posts ranked by likes, in two sorted sets (likes, creation
time) kept together. Scores are absolute like counts, so applying an update twice (an
event redelivered) changes nothing."""
from __future__ import annotations

from typing import Iterable

import redis.asyncio as aioredis

from storage.redis.client import Keys, redis_boundary


@redis_boundary
class PopularPostsCache:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def is_fresh(self) -> bool:
        return bool(await self.redis.exists(self.keys.popular_posts_fresh()))

    async def replace_all(self, entries: Iterable[tuple[str, int, float]], fresh_seconds: int) -> None:
        """Replace the whole set with (post id, like count, created epoch) entries."""
        entries = list(entries)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.popular_posts(), self.keys.popular_posts_born())
            if entries:
                pipe.zadd(self.keys.popular_posts(), {pid: likes for pid, likes, _ in entries})
                pipe.zadd(self.keys.popular_posts_born(), {pid: born for pid, _, born in entries})
            pipe.set(self.keys.popular_posts_fresh(), b"1", ex=fresh_seconds)
            await pipe.execute()

    async def put(self, post_id: str, likes: int, born: float) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.popular_posts(), {post_id: likes})
            pipe.zadd(self.keys.popular_posts_born(), {post_id: born})
            await pipe.execute()

    async def remove(self, *post_ids: str) -> None:
        if not post_ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.popular_posts(), *post_ids)
            pipe.zrem(self.keys.popular_posts_born(), *post_ids)
            await pipe.execute()

    async def drop_older_than(self, cutoff: float) -> None:
        old = await self.redis.zrangebyscore(self.keys.popular_posts_born(), "-inf", f"({cutoff}")
        await self.remove(*(o.decode() for o in old))

    async def top(self, count: int, born_after: float) -> list[tuple[str, int]]:
        """(post id, likes), most liked first (ties: greater id first), recent posts only."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(self.keys.popular_posts(), 0, count - 1, withscores=True)
            pipe.zrangebyscore(self.keys.popular_posts_born(), "-inf", f"({born_after}")
            ranked, old = await pipe.execute()
        too_old = set(old)
        return [(m.decode(), int(s)) for m, s in ranked if m not in too_old]
