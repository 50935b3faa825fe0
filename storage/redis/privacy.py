"""Redis side of an erasure: every key that names the user."""
from __future__ import annotations

import redis.asyncio as aioredis

from storage.redis.client import Keys
from storage.redis.rate_limit import login_subject, user_subject

# The login-failure bucket of storage/redis/rate_limit (keyed by the login as typed, or
# by the user id for a signed-in user's password checks).
_LOGIN_BUCKET = "login-account"


class RedisErasure:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def delete_user_keys(self, user_id: str, username: str | None = None, email: str | None = None) -> int:
        """Deletes the user's profile cache, username mapping and login counters, and any
        other key of this namespace whose name contains the user id (presence, offset
        logs, own feed ...). Idempotent. Keys where the user is only a member of a value
        (others' feeds, sets) are the owning context's step."""
        names = [self.keys.profile(user_id), self.keys.rate(_LOGIN_BUCKET, user_subject(user_id))]
        for login in (username, email):
            if login:
                names.append(self.keys.username(login.lower()))
                names.append(self.keys.rate(_LOGIN_BUCKET, login_subject(login)))
        deleted = await self.redis.delete(*names)
        # A uuid contains no glob characters, so it is safe inside a MATCH pattern.
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=f"{self.keys.ns}:*{user_id}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await self.redis.delete(*batch)
                batch = []
        if batch:
            deleted += await self.redis.delete(*batch)
        return deleted

    async def remove_from_presence(self, user_id: str) -> None:
        """Out of every instance's set of connected users (a crashed instance's set
        would otherwise keep the id until its TTL)."""
        async for key in self.redis.scan_iter(match=self.keys.presence_users("*"), count=1000):
            await self.redis.srem(key, user_id)

    async def remove_from_offset_logs(self, needles: list[str], page: int = 500) -> int:
        """Deletes the entries of every user's replay log whose event names the user
        (their messages, notifications about them). A client resuming from before a
        deleted entry gets ``resync`` and refetches over REST."""
        marks = [n.lower().encode() for n in needles if n]
        removed = 0
        async for key in self.redis.scan_iter(match=self.keys.offset_log("*"), count=1000):
            start = "-"
            while True:
                entries = await self.redis.xrange(key, min=start, max="+", count=page)
                doomed = [entry_id for entry_id, fields in entries
                          if any(m in (fields.get(b"d", b"") + fields.get(b"e", b"")).lower() for m in marks)]
                if doomed:
                    removed += await self.redis.xdel(key, *doomed)
                if len(entries) < page:
                    break
                start = "(" + entries[-1][0].decode()
        return removed
