"""In-process near-caches: a bounded copy of hot Redis cache entries (sessions, public
profiles) in front of the Redis round trip, kept honest by invalidation messages on the
real-time fan-out channel.

Whoever drops a Redis cache entry also publishes its key (``forget_frame``) in the same
round trip; every instance's fan-out listener hands those messages to ``NearCaches.apply``.
Pub/sub loses messages only with the connection, so:

- the listener pings the channel every ``lease / 3`` seconds; a pong answers a ping sent at
  ``t``, and Redis delivers in order, so every invalidation published before ``t`` has been
  applied: ``confirmed(t)``.
- an entry is used only while the last confirmation is at most ``lease`` old. A listener
  that is behind, reconnecting or gone makes every read go to Redis (slower, never stale);
  so a key dropped anywhere stops being served from any near-cache within ``lease`` (plus
  the publish's own latency).
- a lost subscription flushes every near-cache: its messages may be gone.
- a fill races an invalidation (read from Redis, key dropped and published, then the old
  value stored): ``put`` takes the generation read by ``fill_token`` before the read and
  stores nothing if any key of that cache was forgotten, or the cache flushed, meanwhile.

Each cache is an LRU of at most ``max_entries`` with a TTL per entry: nothing a client sends
grows memory without bound (only what a store lookup found is kept).
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterable

import orjson

log = logging.getLogger("pulse.near_cache")

# The fan-out event of an invalidation (never delivered to a socket: it names no recipient).
FORGET_EVENT = "pulse:near-cache-forget"
SESSIONS = "sessions"
PROFILES = "profiles"
UNREAD_COUNTS = "unread_counts"


def forget_frame(cache: str, keys: Iterable[str]) -> bytes:
    """The fan-out channel message that drops ``keys`` of the named near-caches everywhere
    (the channel's frame: a JSON header, a newline, the data)."""
    return orjson.dumps({"e": FORGET_EVENT, "u": []}) + b"\n" + orjson.dumps({"c": cache, "k": list(keys)})


def forget_all_frame(cache: str) -> bytes:
    """The message that empties the named near-caches everywhere."""
    return orjson.dumps({"e": FORGET_EVENT, "u": []}) + b"\n" + orjson.dumps({"c": cache, "all": True})


class NearCache:
    """One LRU map with per-entry expiry, trusted only while its ``NearCaches`` is current."""

    def __init__(self, owner: "NearCaches", max_entries: int, ttl_seconds: float,
                 key_of: Callable[[str], Hashable] = str) -> None:
        self._owner = owner
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.key_of = key_of  # a published key (text) -> this cache's key
        self._entries: OrderedDict[Hashable, tuple[Any, float]] = OrderedDict()
        # Bumped by every forget and flush; a fill begun before one stores nothing.
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any | None:
        if self.max_entries <= 0:
            return None
        now = time.monotonic()
        if not self._owner.current(now):
            self.misses += 1
            return None
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry[1] <= now:
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def fill_token(self) -> int:
        """Take before reading what ``put`` will store."""
        return self.generation

    def put(self, key: Hashable, value: Any, token: int, ttl_seconds: float | None = None) -> None:
        """Stores ``value`` unless something was forgotten since ``token`` was taken, or the
        channel is not current (then nothing would tell this entry apart from a stale one)."""
        ttl = self.ttl_seconds if ttl_seconds is None else min(ttl_seconds, self.ttl_seconds)
        if self.max_entries <= 0 or ttl <= 0 or token != self.generation:
            return
        now = time.monotonic()
        if not self._owner.current(now):
            return
        self._entries[key] = (value, now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, keys: Iterable[Hashable]) -> None:
        self.generation += 1
        for key in keys:
            self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


class NearCaches:
    """Every near-cache of an instance, and the state of the channel that invalidates them.

    Nothing is trusted until the listener has subscribed (``subscribed``), and only while
    its latest confirmation is at most ``lease_seconds`` old."""

    event = FORGET_EVENT  # the fan-out messages it takes (realtime.fanout.ChannelWatcher)

    def __init__(self, *, max_entries: int, ttl_seconds: float, lease_seconds: float) -> None:
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.lease_seconds = lease_seconds
        self._confirmed_at = float("-inf")
        self._subscribed = False
        self._caches: dict[str, list[NearCache]] = {}
        self.flushes = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.lease_seconds > 0

    @property
    def confirm_interval(self) -> float:
        """How often the listener should confirm the channel (three times per lease)."""
        return self.lease_seconds / 3

    def cache(self, name: str, *, ttl_seconds: float | None = None,
              key_of: Callable[[str], Hashable] = str) -> NearCache:
        """A new near-cache that forgets the keys published under ``name``."""
        made = NearCache(self, self.max_entries if self.enabled else 0,
                         self.ttl_seconds if ttl_seconds is None else ttl_seconds, key_of)
        self._caches.setdefault(name, []).append(made)
        return made

    def current(self, now: float) -> bool:
        return now - self._confirmed_at <= self.lease_seconds

    # --- what the fan-out listener reports ------------------------------------------------

    def subscribed(self, sent_at: float) -> None:
        """The subscription (asked for at ``sent_at``, monotonic) is in place: what was
        published before it never reached this instance, so every cache starts empty."""
        self.flush()
        self._subscribed = True
        self._confirmed_at = sent_at

    def confirmed(self, sent_at: float) -> None:
        """A ping sent at ``sent_at`` was answered: every earlier invalidation is applied."""
        if self._subscribed:
            self._confirmed_at = max(self._confirmed_at, sent_at)

    def lost(self) -> None:
        """The subscription is gone: messages may be lost until it is back."""
        self._subscribed = False
        self._confirmed_at = float("-inf")
        self.flush()

    def flush(self) -> None:
        self.flushes += 1
        for caches in self._caches.values():
            for cache in caches:
                cache.clear()

    def apply(self, data_json: bytes) -> None:
        """One invalidation message (``forget_frame``'s data)."""
        try:
            data = orjson.loads(data_json)
            caches = self._caches.get(data["c"], ())
            if data.get("all"):
                for cache in caches:
                    cache.clear()
                return
            keys = data["k"]
            for cache in caches:
                cache.forget([cache.key_of(k) for k in keys])
        except (ValueError, KeyError, TypeError):
            # Not knowing what to forget: forget everything.
            log.error("near-cache: malformed invalidation message; flushing every near-cache")
            self.flush()
