"""Home feeds in Redis: one sorted set per user, members ``author_id:post_id`` scored by
the post's creation time (epoch seconds), capped at the newest N.

A feed holds a marker member (score 0, never returned) once it has been built from
PostgreSQL; a feed without it (never built, evicted by its TTL, or lost with Redis) is
rebuilt on the next read. Fan-out adds to a feed whether or not it is built, and a
rebuild merges into what is there, so a post fanned out while a rebuild is in flight is
not lost.

Hybrid fan-out (large accounts are not pushed): an **author feed** per large account
(same members and scores as a feed, capped the same way) and, per reader, the set of
**merged authors** they follow. A page is read in one script from the reader's feed and
the author feeds of their merged authors; the caller merges them (``merge_sources``).
Both structures carry the built marker and are built from PostgreSQL under a *build
token*: the builder adds a token (its own member) before it reads PostgreSQL and writes
only if the token is still there; a removal from an unbuilt structure deletes it, tokens
and all, so a build that read PostgreSQL before the removal cannot bring the removed
entry back. Additions go only into structures that exist (a build that starts later
reads PostgreSQL after the addition's commit).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from storage.redis.client import Keys, redis_boundary

BUILT = "~built"
# Members of merged-author sets and author feeds that are not data start with "~": the
# marker and build tokens (score 0 in a sorted set, below every post).
_TOKEN = "~b:"
_FANOUT_BATCH = 500
# At most this many commands per script call in a backfill (keys x entries), so that no
# call holds Redis for long.
_BACKFILL_COMMANDS = 20_000

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

# --- hybrid fan-out ---------------------------------------------------------------------

# KEYS[1]: author feed; ARGV: score, member, cap, ttl. Only into an existing author feed
# (built, or being built). Score-0 members (marker, tokens) rank first and stay.
_ADD_TO_AUTHOR_FEED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], redis.call('ZCOUNT', KEYS[1], 0, 0), -(tonumber(ARGV[3]) + 1))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1]: author feed; ARGV: member, marker. Unbuilt: deleted whole (aborts any build).
_REMOVE_FROM_AUTHOR_FEED = """
redis.call('ZREM', KEYS[1], ARGV[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS[1]: sorted set; ARGV: marker, token, ttl. 0: already built.
_BEGIN_SORTED_BUILD = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 0, ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1]: sorted set; ARGV: marker, token, cap, ttl, then score, member pairs. 0: the
# token is gone (a removal or another build came first); nothing written.
_FINISH_SORTED_BUILD = """
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, 0)
for i = 5, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 1, -(tonumber(ARGV[3]) + 1))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1]: set; ARGV: marker, token, ttl. 0: already built.
_BEGIN_SET_BUILD = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1]: set; ARGV: marker, token, ttl, token prefix, then members. 0: token gone.
_FINISH_SET_BUILD = """
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 then return 0 end
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if string.sub(m, 1, #ARGV[4]) == ARGV[4] then redis.call('SREM', KEYS[1], m) end
end
for i = 5, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: sets; ARGV: member. Only into existing sets.
_ADD_TO_EXISTING_SETS = """
local added = 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then added = added + redis.call('SADD', key, ARGV[1]) end
end
return added
"""

# KEYS: sets; ARGV: member, marker. An unbuilt set is deleted whole (aborts any build).
_REMOVE_FROM_SETS = """
for _, key in ipairs(KEYS) do
  redis.call('SREM', key, ARGV[1])
  if redis.call('SISMEMBER', key, ARGV[2]) == 0 then redis.call('DEL', key) end
end
return #KEYS
"""

# KEYS: (feed, merged-authors set) of each follower; ARGV: author, marker, cap, ttl, then
# score, member pairs. For a follower whose reads merge the author (or whose set is not
# built, so it may): the author's posts into their feed (if built; an unbuilt feed is
# rebuilt from PostgreSQL with them), then the author out of the set. Never for a
# follower whose built set lacks the author: they unfollowed meanwhile, or their follow
# is still to be handled (it pushes the posts itself).
_BACKFILL = """
local author, marker, cap, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local done = 0
for i = 1, #KEYS, 2 do
  local feed, merged = KEYS[i], KEYS[i + 1]
  local built = redis.call('SISMEMBER', merged, marker) == 1
  local merging = built and redis.call('SISMEMBER', merged, author) == 1
  if merging or not built then
    if redis.call('ZSCORE', feed, marker) then
      for j = 5, #ARGV, 2 do redis.call('ZADD', feed, ARGV[j], ARGV[j + 1]) end
      redis.call('ZREMRANGEBYRANK', feed, 1, -(cap + 1))
      redis.call('EXPIRE', feed, ttl)
      done = done + 1
    end
    if merging then redis.call('SREM', merged, author) end
  end
end
return done
"""

# One round trip for a page of a merged feed. KEYS[1]: the reader's feed, KEYS[2]: their
# merged-author set; ARGV: max score ('+inf' for the first page), '1' when there is a
# cursor, count, marker, ttl, author feed key prefix, cap. Author feeds are named from
# the set's members (a standalone Redis; not cluster-safe). Answers
#   {'missing', feed unbuilt 0/1, set unbuilt 0/1, {authors whose author feed is unbuilt}}
# or {'ok', {authors}, rows, lowest, rows, lowest, ...}: for the feed and then each
# author feed, its member, score pairs from max down (the entries tied with the cursor
# included: the caller skips those at or above it), and its lowest entry when it holds
# ``cap`` entries (it may have lost older ones: nothing below that is complete).
_MERGED_PAGE = """
local marker, ttl, prefix, cap = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local feed_unbuilt = redis.call('ZSCORE', KEYS[1], marker) and 0 or 1
local set_unbuilt = redis.call('SISMEMBER', KEYS[2], marker) == 1 and 0 or 1
local authors, missing = {}, {}
if set_unbuilt == 0 then
  for _, a in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if string.sub(a, 1, 1) ~= '~' then
      if redis.call('ZSCORE', prefix .. a, marker) then table.insert(authors, a) else table.insert(missing, a) end
    end
  end
end
if feed_unbuilt == 1 or set_unbuilt == 1 or #missing > 0 then
  return {'missing', feed_unbuilt, set_unbuilt, missing}
end
redis.call('EXPIRE', KEYS[2], ttl)
local sources = {KEYS[1]}
for _, a in ipairs(authors) do table.insert(sources, prefix .. a) end
local out = {'ok', authors}
local count = tonumber(ARGV[3])
for _, key in ipairs(sources) do
  redis.call('EXPIRE', key, ttl)
  local ties = 0
  if ARGV[2] ~= '' then ties = redis.call('ZCOUNT', key, ARGV[1], ARGV[1]) end
  table.insert(out, redis.call('ZREVRANGEBYSCORE', key, ARGV[1], '(0', 'WITHSCORES', 'LIMIT', 0, count + ties))
  local lowest = {}
  if redis.call('ZCARD', key) - redis.call('ZCOUNT', key, 0, 0) >= cap then
    lowest = redis.call('ZRANGEBYSCORE', key, '(0', '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  end
  table.insert(out, lowest)
end
return out
"""


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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


def _entry(name: str, score: str) -> FeedEntry:
    author_id, _, post_id = name.partition(":")
    return FeedEntry(author_id, post_id, score)


def _key(entry: FeedEntry) -> tuple[float, str]:
    """The feed's order, newest first when reversed: score, then member (byte order, as
    Redis orders equal scores)."""
    return float(entry.score), entry.member


def merge_sources(sources: list[tuple[list[FeedEntry], FeedEntry | None]], *,
                  after: tuple[str, str] | None, count: int) -> list[FeedEntry]:
    """Up to ``count`` entries after the cursor, newest first, from several sources
    (each: its entries from the cursor down, and its lowest entry if it is full). An entry
    in two sources (pushed before its author became large) comes once. Nothing below the
    highest lowest entry of a full source: that source may have lost entries there, and a
    feed with holes would page differently from PostgreSQL."""
    floor: tuple[float, str] | None = None
    for _, lowest in sources:
        if lowest is not None and (floor is None or _key(lowest) > floor):
            floor = _key(lowest)
    cursor = (float(after[0]), after[1]) if after else None
    unique: dict[str, FeedEntry] = {}
    for entries, _ in sources:
        for e in entries:
            k = _key(e)
            if (cursor is None or k < cursor) and (floor is None or k >= floor):
                unique.setdefault(e.member, e)
    return sorted(unique.values(), key=_key, reverse=True)[:count]


@dataclass(frozen=True)
class MergedPage:
    """A page of a merged feed, or what must be built before it can be read."""

    entries: list[FeedEntry] = field(default_factory=list)
    merged_authors: list[str] = field(default_factory=list)
    feed_unbuilt: bool = False
    merged_authors_unbuilt: bool = False
    author_feeds_unbuilt: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.feed_unbuilt or self.merged_authors_unbuilt or self.author_feeds_unbuilt)


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
        self._merged_page = redis.register_script(_MERGED_PAGE)
        self._add_to_author_feed = redis.register_script(_ADD_TO_AUTHOR_FEED)
        self._remove_from_author_feed = redis.register_script(_REMOVE_FROM_AUTHOR_FEED)
        self._begin_sorted_build = redis.register_script(_BEGIN_SORTED_BUILD)
        self._finish_sorted_build = redis.register_script(_FINISH_SORTED_BUILD)
        self._begin_set_build = redis.register_script(_BEGIN_SET_BUILD)
        self._finish_set_build = redis.register_script(_FINISH_SET_BUILD)
        self._add_to_existing_sets = redis.register_script(_ADD_TO_EXISTING_SETS)
        self._remove_from_sets = redis.register_script(_REMOVE_FROM_SETS)
        self._backfill = redis.register_script(_BACKFILL)

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

    # --- hybrid fan-out: merged reads -----------------------------------------------

    async def merged_page(self, user_id: str, *, after: tuple[str, str] | None, count: int) -> MergedPage:
        """Up to ``count`` entries after the cursor (score, member), newest first, from
        the user's feed and the author feeds of the large accounts they follow, in one
        round trip; or what is unbuilt."""
        max_score = after[0] if after else "+inf"
        raw = await self._merged_page(
            keys=[self.keys.feed(user_id), self.keys.merged_authors(user_id)],
            args=[max_score, "1" if after else "", count, BUILT, self.ttl, self.keys.author_feed_prefix(),
                  self.max_items])
        if _text(raw[0]) == "missing":
            return MergedPage(feed_unbuilt=bool(raw[1]), merged_authors_unbuilt=bool(raw[2]),
                              author_feeds_unbuilt=[_text(a) for a in raw[3]])
        sources = []
        for i in range(2, len(raw), 2):
            rows, lowest = raw[i], raw[i + 1]
            entries = [_entry(_text(rows[j]), _text(rows[j + 1])) for j in range(0, len(rows), 2)]
            sources.append((entries, _entry(_text(lowest[0]), _text(lowest[1])) if lowest else None))
        return MergedPage(entries=merge_sources(sources, after=after, count=count),
                          merged_authors=[_text(a) for a in raw[1]])

    # --- hybrid fan-out: author feeds -------------------------------------------------

    async def add_to_author_feed(self, author_id: str, post_id: str, score: float) -> bool:
        """Into the author feed if it exists (else a build will read the post from PostgreSQL)."""
        return bool(await self._add_to_author_feed(
            keys=[self.keys.author_feed(author_id)],
            args=[repr(score), member(author_id, post_id), self.max_items, self.ttl]))

    async def remove_from_author_feed(self, author_id: str, post_id: str) -> None:
        await self._remove_from_author_feed(keys=[self.keys.author_feed(author_id)],
                                            args=[member(author_id, post_id), BUILT])

    async def begin_author_feed_build(self, author_id: str) -> str | None:
        """A build token, or None when the author feed is built already."""
        token = _TOKEN + secrets.token_hex(8)
        began = await self._begin_sorted_build(keys=[self.keys.author_feed(author_id)],
                                               args=[BUILT, token, self.ttl])
        return token if began else None

    async def finish_author_feed_build(self, author_id: str, token: str, post_scores: list[tuple[str, float]]) -> bool:
        """Writes the (post id, score) entries read from PostgreSQL and marks the author
        feed built, unless something removed from it (or built it) since the token."""
        args: list = [BUILT, token, self.max_items, self.ttl]
        for post_id, score in post_scores:
            args += [repr(score), member(author_id, post_id)]
        return bool(await self._finish_sorted_build(keys=[self.keys.author_feed(author_id)], args=args))

    async def author_feed_built(self, author_id: str) -> bool:
        return await self.redis.zscore(self.keys.author_feed(author_id), BUILT) is not None

    async def drop_author_feed(self, author_id: str) -> None:
        await self.redis.delete(self.keys.author_feed(author_id))

    # --- hybrid fan-out: each reader's merged authors ---------------------------------

    async def add_merged_author(self, user_ids: list[str], author_id: str) -> None:
        """Into the users' merged-author sets that exist (a missing one is built from
        PostgreSQL on the next read)."""
        for start in range(0, len(user_ids), _FANOUT_BATCH):
            await self._add_to_existing_sets(
                keys=[self.keys.merged_authors(u) for u in user_ids[start:start + _FANOUT_BATCH]], args=[author_id])

    async def remove_merged_author(self, user_ids: list[str], author_id: str) -> None:
        for start in range(0, len(user_ids), _FANOUT_BATCH):
            await self._remove_from_sets(
                keys=[self.keys.merged_authors(u) for u in user_ids[start:start + _FANOUT_BATCH]],
                args=[author_id, BUILT])

    async def begin_merged_authors_build(self, user_id: str) -> str | None:
        token = _TOKEN + secrets.token_hex(8)
        began = await self._begin_set_build(keys=[self.keys.merged_authors(user_id)], args=[BUILT, token, self.ttl])
        return token if began else None

    async def finish_merged_authors_build(self, user_id: str, token: str, author_ids: list[str]) -> bool:
        return bool(await self._finish_set_build(keys=[self.keys.merged_authors(user_id)],
                                                 args=[BUILT, token, self.ttl, _TOKEN, *author_ids]))

    async def merged_authors(self, user_id: str) -> set[str] | None:
        """The user's merged authors; None when the set is not built."""
        members = {_text(m) for m in await self.redis.smembers(self.keys.merged_authors(user_id))}
        if BUILT not in members:
            return None
        return {m for m in members if not m.startswith("~")}

    async def backfill_from_author(self, user_ids: list[str], author_id: str,
                                   post_scores: list[tuple[str, float]]) -> int:
        """An author goes back to fan-out on write: for each follower whose reads merge
        them, their recent posts into the follower's feed and the author out of the
        follower's merged authors (atomically per follower: never neither). Returns how
        many feeds were filled."""
        entries: list = []
        for post_id, score in post_scores:
            entries += [repr(score), member(author_id, post_id)]
        per_call = max(1, min(_FANOUT_BATCH, _BACKFILL_COMMANDS // max(1, len(post_scores))))
        done = 0
        for start in range(0, len(user_ids), per_call):
            keys: list[str] = []
            for u in user_ids[start:start + per_call]:
                keys += [self.keys.feed(u), self.keys.merged_authors(u)]
            done += await self._backfill(keys=keys, args=[author_id, BUILT, self.max_items, self.ttl, *entries])
        return done
