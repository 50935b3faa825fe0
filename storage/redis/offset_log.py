"""Per-user offset log and cross-instance fan-out channel (Redis streams + pub/sub).

Every replayable event is appended to a capped stream per user; the stream entry id
is the event's ``offset`` (``<ms>-<seq>``, increasing per user). Appending and
publishing happen in one Lua script, so the order in which instances receive events
from the channel is the order of the offsets: no client ever sees offset 5 before 4.

Each entry also records the id of the entry before it (``p``; ``0-0`` for the first
entry of a fresh stream). Resuming after offset O is possible exactly when O is still
in the stream, or when the oldest entry kept names O as its predecessor; anything else
(trimmed past O, stream expired and recreated, an offset never issued) is refused.

An erasure redacts the entries about the erased user in place (``OffsetLogStore.redact_about``):
such an entry keeps its id and ``p`` but carries ``REDACTED_FIELD`` instead of an event,
so the chain stays intact and replays skip it.

A channel message is ``<header JSON>\\n<data JSON>``: the header names the event and
its recipients (``"o": {user_id: offset}`` for logged events, ``"u": [user_id, ...]``
for ephemeral ones); the data is left as raw JSON so each instance can write it into
Socket.IO packets without decoding and re-encoding it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from storage.redis.client import Keys, redis_boundary

# Stream ids: two unsigned 64-bit integers.
OFFSET_RE = re.compile(r"^(\d{1,20})-(\d{1,20})$")
START_OF_LOG = "0-0"
# Marks a redacted entry (no event, no data).
REDACTED_FIELD = "x"
# Recipients per script call: keeps one call short for very large groups (order per
# user is unaffected: a user is in exactly one chunk).
USERS_PER_CALL = 500

# KEYS: the recipients' logs, then (when ARGV[6] is "1") a marker key: an append keyed
# by an id (a message pushed again after a failure) happens once, whichever call gets
# there first. ARGV: channel, event, data, max length, TTL, once flag, recipients.
_APPEND_AND_PUBLISH = """
local logs = #KEYS
if ARGV[6] == '1' then
  logs = logs - 1
  if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', ARGV[5]) then return 0 end
end
local offsets = {}
for i = 1, logs do
  local key = KEYS[i]
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  local prev = '0-0'
  if last[1] then prev = last[1][1] end
  local id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[2], 'd', ARGV[3], 'p', prev)
  redis.call('EXPIRE', key, ARGV[5])
  offsets[i] = cjson.encode(ARGV[6 + i]) .. ':"' .. id .. '"'
end
redis.call('PUBLISH', ARGV[1],
  '{"e":' .. cjson.encode(ARGV[2]) .. ',"o":{' .. table.concat(offsets, ',') .. '}}\\n' .. ARGV[3])
return logs
"""


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


def parse_offset(offset: object) -> tuple[int, int] | None:
    """``(ms, seq)`` of a well-formed offset, else None."""
    if not isinstance(offset, str):
        return None
    match = OFFSET_RE.match(offset)
    if match is None:
        return None
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms >= 2**64 or seq >= 2**64:
        return None
    return ms, seq


@dataclass(frozen=True)
class LogEntry:
    offset: str
    event: str
    data_json: bytes


@redis_boundary
class OffsetLogStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, max_events: int, max_age_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.max_events = max_events
        self.max_age_seconds = max_age_seconds
        self._append = redis.register_script(_APPEND_AND_PUBLISH)
        self._redact = redis.register_script(_REDACT)

    async def append_and_publish(self, user_ids: list[str], event: str, data_json: bytes,
                                 once_key: str | None = None) -> None:
        """``once_key`` (e.g. ``message:<id>``): a later call with the same key and
        recipients appends nothing (for as long as the logs keep events)."""
        channel = self.keys.fanout_channel()
        for start in range(0, len(user_ids), USERS_PER_CALL):
            chunk = user_ids[start:start + USERS_PER_CALL]
            keys = [self.keys.offset_log(u) for u in chunk]
            if once_key is not None:
                keys.append(self.keys.appended_once(f"{once_key}:{start // USERS_PER_CALL}"))
            await self._append(
                keys=keys,
                args=[channel, event, data_json, self.max_events, self.max_age_seconds,
                      "1" if once_key is not None else "", *chunk],
            )

    async def append_and_publish_many(self, events: list[tuple[list[str], str, bytes, str | None]]) -> None:
        """``append_and_publish`` of each (user ids, event, data, once key), in this order, in
        one pipelined round trip (Redis runs them in order: every log and the channel see
        that order). Raises if any did not run."""
        calls = []
        for user_ids, event, data_json, once_key in events:
            for start in range(0, len(user_ids), USERS_PER_CALL):
                chunk = user_ids[start:start + USERS_PER_CALL]
                keys = [self.keys.offset_log(u) for u in chunk]
                if once_key is not None:
                    keys.append(self.keys.appended_once(f"{once_key}:{start // USERS_PER_CALL}"))
                calls.append((keys, [self.keys.fanout_channel(), event, data_json, self.max_events,
                                     self.max_age_seconds, "1" if once_key is not None else "", *chunk]))
        while calls:
            # EVALSHA without redis-py's script bookkeeping (a SCRIPT EXISTS round trip per
            # pipeline); a Redis that lost its scripts (restarted) gets it loaded, and what
            # it refused for that runs again, still in order (the refused ones are the last).
            async with self.redis.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    pipe.evalsha(self._append.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
            unscripted = [call for call, result in zip(calls, results) if isinstance(result, NoScriptError)]
            failed = [r for r in results if isinstance(r, Exception) and not isinstance(r, NoScriptError)]
            if failed:
                raise failed[0]
            if unscripted:
                await self.redis.script_load(_APPEND_AND_PUBLISH)
            calls = unscripted

    async def publish_ephemeral(self, user_ids: list[str], event: str, data_json: bytes) -> None:
        header = orjson.dumps({"e": event, "u": user_ids})
        await self.redis.publish(self.keys.fanout_channel(), header + b"\n" + data_json)

    async def last_offset(self, user_id: str) -> str:
        """The newest offset of the user's log (``0-0`` when it is empty)."""
        last = await self.redis.xrevrange(self.keys.offset_log(user_id), "+", "-", count=1)
        return _text(last[0][0]) if last else START_OF_LOG

    async def read_after(self, user_id: str, offset: str) -> list[LogEntry] | None:
        """Every entry after ``offset`` (well-formed) in order, or None when the log no
        longer holds everything after it."""
        # Inclusive of ``offset`` itself: one atomic read answers both "what follows"
        # and "is the chain from the client's offset intact".
        entries = await self.redis.xrange(self.keys.offset_log(user_id), min=offset, max="+")
        if not entries:
            # Nothing at or after the offset: fine only for the start of an empty log.
            return [] if offset == START_OF_LOG else None
        first_id, first_fields = entries[0]
        if _text(first_id) == offset:
            entries = entries[1:]
        elif _text(first_fields.get(b"p", b"")) != offset:
            return None
        return [LogEntry(_text(i), _text(f[b"e"]), f[b"d"]) for i, f in entries if _REDACTED not in f]

    async def redact_about(self, user_id: str, log_owner_ids: Iterable[str], page: int = 500) -> int:
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
                    if _REDACTED in fields or b"d" not in fields:
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


_REDACTED = REDACTED_FIELD.encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
