"""The near-cache's own rules: bounded (LRU), entries expire, nothing is served or stored
while the invalidation channel is not confirmed, a fill that raced an invalidation stores
nothing, a lost subscription or a malformed message flushes everything. (Invalidation
across instances through Redis: tests/server/test_near_caches.py.)"""
from __future__ import annotations

import time

from storage.near_cache import PROFILES, SESSIONS, UNREAD_COUNTS, NearCaches, forget_all_frame, forget_frame


def confirmed_caches(**overrides) -> NearCaches:
    caches = NearCaches(**{"max_entries": 100, "ttl_seconds": 60.0, "lease_seconds": 0.5, **overrides})
    caches.subscribed(time.monotonic())
    return caches


def data_of(frame: bytes) -> bytes:
    return frame.partition(b"\n")[2]


def test_an_entry_is_served_while_the_channel_is_confirmed():
    caches = confirmed_caches()
    profiles = caches.cache(PROFILES)
    profiles.put("u1", {"id": "u1"}, profiles.fill_token())
    assert profiles.get("u1") == {"id": "u1"}
    assert profiles.get("u2") is None


def test_nothing_is_served_or_stored_before_the_subscription_or_once_the_lease_is_over():
    caches = NearCaches(max_entries=100, ttl_seconds=60.0, lease_seconds=0.2)
    profiles = caches.cache(PROFILES)
    profiles.put("u1", "before", profiles.fill_token())
    caches.subscribed(time.monotonic())
    assert profiles.get("u1") is None  # stored nothing while unsubscribed
    profiles.put("u1", "after", profiles.fill_token())
    assert profiles.get("u1") == "after"
    time.sleep(0.25)  # no confirmation within the lease: Redis is asked instead
    assert profiles.get("u1") is None
    profiles.put("u2", "unconfirmed", profiles.fill_token())
    caches.confirmed(time.monotonic())
    assert profiles.get("u1") == "after"  # the same subscription: nothing was lost
    assert profiles.get("u2") is None


def test_the_size_is_bounded_least_recently_used_first():
    caches = confirmed_caches(max_entries=3)
    sessions = caches.cache(SESSIONS)
    for k in ("a", "b", "c"):
        sessions.put(k, k.upper(), sessions.fill_token())
    assert sessions.get("a") == "A"  # now the most recently used
    for k in ("d", "e"):
        sessions.put(k, k.upper(), sessions.fill_token())
    assert len(sessions) == 3
    assert [sessions.get(k) for k in "abcde"] == ["A", None, None, "D", "E"]
    for n in range(10_000):
        sessions.put(f"k{n}", n, sessions.fill_token())
    assert len(sessions) == 3


def test_entries_expire_by_the_cache_ttl_or_their_own_shorter_one():
    caches = confirmed_caches(ttl_seconds=0.15, lease_seconds=5.0)
    sessions = caches.cache(SESSIONS)
    sessions.put("short", 1, sessions.fill_token(), ttl_seconds=0.05)
    sessions.put("long", 2, sessions.fill_token(), ttl_seconds=3600)  # capped by the cache's
    sessions.put("gone", 3, sessions.fill_token(), ttl_seconds=0)
    assert (sessions.get("short"), sessions.get("long"), sessions.get("gone")) == (1, 2, None)
    time.sleep(0.08)
    assert (sessions.get("short"), sessions.get("long")) == (None, 2)
    time.sleep(0.1)
    assert sessions.get("long") is None


def test_a_fill_that_raced_an_invalidation_stores_nothing():
    caches = confirmed_caches()
    profiles = caches.cache(PROFILES)
    token = profiles.fill_token()  # a read of Redis begins...
    caches.apply(data_of(forget_frame(PROFILES, ["u1"])))  # ...the key is dropped meanwhile
    profiles.put("u1", "read before the drop", token)
    assert profiles.get("u1") is None
    token = profiles.fill_token()
    caches.flush()
    profiles.put("u1", "read before the flush", token)
    assert profiles.get("u1") is None


def test_a_message_forgets_its_keys_in_every_cache_of_its_name_only():
    caches = confirmed_caches()
    public, own = caches.cache(PROFILES), caches.cache(PROFILES)
    sessions = caches.cache(SESSIONS, key_of=bytes.fromhex)
    for cache in (public, own):
        cache.put("u1", "p1", cache.fill_token())
        cache.put("u2", "p2", cache.fill_token())
    sessions.put(b"\x01", "u1", sessions.fill_token())
    sessions.put(b"\x02", "u2", sessions.fill_token())
    caches.apply(data_of(forget_frame(PROFILES, ["u1"])))
    assert [public.get("u1"), own.get("u1"), public.get("u2"), own.get("u2")] == [None, None, "p2", "p2"]
    assert sessions.get(b"\x01") == "u1"
    caches.apply(data_of(forget_frame(SESSIONS, ["01"])))
    assert (sessions.get(b"\x01"), sessions.get(b"\x02")) == (None, "u2")


def test_a_message_may_empty_every_cache_of_its_name():
    caches = confirmed_caches()
    counts, profiles = caches.cache(UNREAD_COUNTS), caches.cache(PROFILES)
    counts.put("u1", 3, counts.fill_token())
    profiles.put("u1", "p1", profiles.fill_token())
    token = counts.fill_token()
    caches.apply(data_of(forget_all_frame(UNREAD_COUNTS)))
    counts.put("u2", 1, token)  # read before the message: not kept
    assert (len(counts), counts.get("u1"), profiles.get("u1")) == (0, None, "p1")


def test_a_lost_subscription_flushes_everything_and_serves_nothing_until_resubscribed():
    caches = confirmed_caches()
    profiles = caches.cache(PROFILES)
    profiles.put("u1", "p1", profiles.fill_token())
    caches.lost()
    assert len(profiles) == 0 and profiles.get("u1") is None
    caches.confirmed(time.monotonic())  # a late pong of the old connection changes nothing
    profiles.put("u1", "p1", profiles.fill_token())
    assert profiles.get("u1") is None
    caches.subscribed(time.monotonic())
    profiles.put("u1", "p1", profiles.fill_token())
    assert profiles.get("u1") == "p1"


def test_a_malformed_message_flushes_everything():
    caches = confirmed_caches()
    profiles = caches.cache(PROFILES)
    profiles.put("u1", "p1", profiles.fill_token())
    caches.apply(b'{"c": "profiles"}')
    assert profiles.get("u1") is None and caches.flushes == 2  # subscribed() flushed once


def test_disabled_caches_keep_nothing():
    for caches in (confirmed_caches(max_entries=0), confirmed_caches(lease_seconds=0)):
        profiles = caches.cache(PROFILES)
        profiles.put("u1", "p1", profiles.fill_token())
        assert profiles.get("u1") is None and len(profiles) == 0
