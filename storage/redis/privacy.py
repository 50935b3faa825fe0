"""Redis side of an erasure: every key that names the user, and the entries about them
in other users' replay logs (found by the ids they carry, never by text)."""
from __future__ import annotations

from typing import Any, Iterable

import orjson
import redis.asyncio as aioredis

from storage.redis.client import Keys, redis_boundary
from storage.redis.offset_log import REDACTED_FIELD
from storage.redis.rate_limit import login_subject, user_subject

# The login-failure bucket of storage/redis/rate_limit (keyed by the login as typed, or
# by the user id for a signed-in user's password checks).
_LOGIN_BUCKET = "login-account"

# The fields of pushed events that hold one user id, and those that hold lists of them.
# An entry names a user only through these (a body or a notification text that happens
# to contain a username is not about that user).
USER_ID_FIELDS = frozenset({"sender_id", "actor_id", "user_id", "member_id", "author_id", "host_id",
                            "follower_id", "followee_id"})
USER_ID_LIST_FIELDS = frozenset({"actor_ids", "member_ids", "user_ids", "attendee_ids", "recipient_ids"})

# Rebuilds one log with the given entries redacted, atomically (no append can come in
# between): a stream entry cannot be changed in place, and deleting it would break the
# ``p`` chain that tells a resumable offset from a trimmed one (a client whose offset
# sits next to a deleted entry would get a spurious ``resync``). Each redacted entry keeps
# its id and its predecessor and loses its event and data; replays skip it. The stream's
# last id and TTL are kept, so offsets stay increasing. KEYS[1] the log; ARGV the ids.
_REDACT = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
local doomed = {}
for _, id in ipairs(ARGV) do doomed[id] = true end
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
local hit = 0
for _, entry in ipairs(entries) do if doomed[entry[1]] then hit = hit + 1 end end
if hit == 0 then return 0 end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last_id
for i = 1, #info, 2 do if info[i] == 'last-generated-id' then last_id = info[i + 1] end end
redis.call('DEL', KEYS[1])
for _, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  if doomed[id] then
    local prev = '0-0'
    for i = 1, #fields, 2 do if fields[i] == 'p' then prev = fields[i + 1] end end
    redis.call('XADD', KEYS[1], id, 'p', prev, $REDACTED_FIELD, '1')
  else
    redis.call('XADD', KEYS[1], id, unpack(fields))
  end
end
if last_id then redis.call('XSETID', KEYS[1], last_id) end
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return hit
""".replace("$REDACTED_FIELD", f"'{REDACTED_FIELD}'")


def names_user(value: Any, user_id: str) -> bool:
    """Whether a pushed event's data names the user in one of its id fields (at any depth)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in USER_ID_FIELDS and item == user_id:
                return True
            if key in USER_ID_LIST_FIELDS and isinstance(item, list) and user_id in item:
                return True
            if isinstance(item, (dict, list)) and names_user(item, user_id):
                return True
        return False
    if isinstance(value, list):
        return any(names_user(item, user_id) for item in value)
    return False


@redis_boundary
class RedisErasure:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._redact = redis.register_script(_REDACT)

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

    async def remove_from_presence(self, user_id: str) -> None:
        """Out of every instance's set of connected users (a crashed instance's set
        would otherwise keep the id until its TTL)."""
        async for key in self.redis.scan_iter(match=self.keys.presence_users("*"), count=1000):
            await self.redis.srem(key, user_id)

    async def redact_in_offset_logs(self, user_id: str, log_owner_ids: Iterable[str], page: int = 500) -> int:
        """Redacts, in the replay logs of ``log_owner_ids`` only (the caller knows from
        its stores whose logs can hold events about the user), every entry whose data
        names the user in an id field: their messages and read receipts, notifications
        about them. Other entries stay as they were, with their offsets, and a client
        resuming from any offset (a redacted one included) replays the rest. Idempotent."""
        redacted = 0
        for owner in dict.fromkeys(log_owner_ids):
            if owner == user_id:
                continue  # their own log goes whole with their keys
            key = self.keys.offset_log(owner)
            doomed: list[str] = []
            start = "-"
            while True:
                entries = await self.redis.xrange(key, min=start, max="+", count=page)
                for entry_id, fields in entries:
                    if REDACTED_FIELD.encode() in fields or b"d" not in fields:
                        continue
                    try:
                        data = orjson.loads(fields[b"d"])
                    except orjson.JSONDecodeError:
                        continue
                    if names_user(data, user_id):
                        doomed.append(entry_id.decode())
                if len(entries) < page:
                    break
                start = "(" + entries[-1][0].decode()
            if doomed:
                redacted += await self._redact(keys=[key], args=doomed)
        return redacted
