"""Per-user offset log and cross-instance fan-out channel (Redis streams + pub/sub).

Every replayable event is appended to a capped stream per user; the stream entry id
is the event's ``offset`` (``<ms>-<seq>``, increasing per user). Appending and
publishing happen in one Lua script, so the order in which instances receive events
from the channel is the order of the offsets: no client ever sees offset 5 before 4.

Each entry also records the id of the entry before it (``p``; ``0-0`` for the first
entry of a fresh stream). Resuming after offset O is possible exactly when O is still
in the stream, or when the oldest entry kept names O as its predecessor; anything else
(trimmed past O, stream expired and recreated, an offset never issued) is refused.

An erasure redacts the entries about the erased user in place (``storage/redis/privacy``):
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

import orjson
import redis.asyncio as aioredis

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


_REDACTED = REDACTED_FIELD.encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
