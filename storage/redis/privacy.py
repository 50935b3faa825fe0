"""Redis side of an erasure: every key that names the user (the users context's step,
which knows the account's username and email until the saga's last step). Where the
user is only in a value of another's key, the owner removes them: the replay logs
(``OffsetLogStore.redact_about``), presence sets (``PresenceStore``), feeds (``FeedCache``)."""
from __future__ import annotations

import redis.asyncio as aioredis

from storage.redis.client import Keys, redis_boundary
from storage.redis.rate_limit import login_subject, user_subject

# The login-failure bucket of storage/redis/rate_limit (keyed by the login as typed, or
# by the user id for a signed-in user's password checks).
_LOGIN_BUCKET = "login-account"


@redis_boundary
class RedisErasure:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def delete_user_keys(self, user_id: str, username: str | None = None, email: str | None = None) -> int:
        """Deletes the user's profile cache, username mapping, login counters, offset log
        and feed, and any other key of this namespace whose name contains the user id (a
        key-name match done by Redis itself; no value is read). Idempotent. Keys where
        the user is only a member of a value (others' feeds, sets) are the owning
        context's step."""
        names = [self.keys.profile(user_id), self.keys.offset_log(user_id), self.keys.feed(user_id),
                 self.keys.rate(_LOGIN_BUCKET, user_subject(user_id))]
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
