"""The membership cache trusts an entry only while the subscription that carries changes
is the one it was read under, keeps no load a change overtook, and is bounded."""
from __future__ import annotations

from bson import ObjectId

from server.services.membership_cache import Members, MembershipCache


class Subscription:
    """Stands in for the fan-out listener: its subscription number, None while down."""

    def __init__(self) -> None:
        self.epoch: int | None = 1

    def __call__(self) -> int | None:
        return self.epoch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def members(*ids: str) -> Members:
    return Members(ObjectId(), ids)


def test_an_entry_is_kept_and_given_back_while_the_subscription_lasts():
    cache = MembershipCache(Subscription())
    entry = members("a", "b")
    cache.put("c1", entry, cache.ticket())
    assert cache.get("c1") is entry and cache.get("c2") is None


def test_a_lost_or_renewed_subscription_makes_every_entry_untrusted():
    subscription = Subscription()
    cache = MembershipCache(subscription)
    cache.put("c1", members("a"), cache.ticket())
    subscription.epoch = None  # lost: announcements may be missed from now on
    assert cache.get("c1") is None
    cache.put("c1", members("a"), cache.ticket())  # nothing is kept while there is none
    assert len(cache) == 0
    subscription.epoch = 1
    cache.put("c2", members("b"), cache.ticket())
    subscription.epoch = 2  # resubscribed: what was announced meanwhile is unknown
    assert cache.get("c2") is None


def test_a_load_overtaken_by_a_change_or_a_new_subscription_is_not_kept():
    subscription = Subscription()
    cache = MembershipCache(subscription)
    ticket = cache.ticket()  # a read from MongoDB starts...
    cache.forget(["c1"])  # ...a change is announced while it is on its way
    cache.put("c1", members("a", "gone"), ticket)
    assert cache.get("c1") is None
    ticket = cache.ticket()
    subscription.epoch = 2
    cache.put("c1", members("a"), ticket)
    assert cache.get("c1") is None


def test_forget_and_clear():
    cache = MembershipCache(Subscription())
    for key in ("c1", "c2", "c3"):
        cache.put(key, members("a"), cache.ticket())
    cache.forget(["c2"])
    assert cache.get("c2") is None and cache.get("c1") is not None
    cache.clear()
    assert len(cache) == 0


def test_entries_expire_and_the_least_recently_stored_go_first():
    clock = Clock()
    cache = MembershipCache(Subscription(), max_entries=2, ttl_seconds=10, clock=clock)
    cache.put("c1", members("a"), cache.ticket())
    clock.now += 5
    cache.put("c2", members("b"), cache.ticket())
    cache.put("c3", members("c"), cache.ticket())
    assert cache.get("c1") is None and len(cache) == 2  # the oldest made room
    clock.now += 9
    assert cache.get("c2") is not None
    clock.now += 1  # 10 s since c2 and c3 were read
    assert cache.get("c2") is None and cache.get("c3") is None
