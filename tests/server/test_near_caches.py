"""The app's near-caches (sessions, public and own profiles, unread notification counts)
across two instances on the same stores: a token revoked on one (logout, logout-all,
erasure) or expired is refused by the other within the 1 s the API promises, and a
profile, counter or unread-count change is served by the other within it too (at once on
the instance that made it: tests/api). A lost fan-out subscription flushes the
near-caches; their size is bounded whatever clients send.

The 1 s holds by construction, not by luck: an instance serves a near entry only while its
invalidation channel was confirmed within the 0.5 s lease, so these waits cannot time
out on a slow machine (a lagging listener sends reads to Redis)."""
from __future__ import annotations

import time
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import redis.asyncio as aioredis

from server import appkeys
from server.security import hash_token
from tests.helpers.api import Api
from tests.helpers.stores import RedisServer
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The API's bound for revocation on every instance; the lease is half of it.
REVOKED_WITHIN_SECONDS = 1.0


def users_of(api: Api):
    return api.app[appkeys.SERVICES].users


def near_session(api: Api, token: str) -> str | None:
    return users_of(api).sessions_cache.near.get(hash_token(token))


def near_profile(api: Api, user_id: str):
    return users_of(api).profile_cache.near.get(user_id)


def near_own(api: Api, user_id: str):
    return users_of(api).profile_cache.near_own.get(user_id)


@asynccontextmanager
async def two_instances(start_app, **overrides) -> AsyncIterator[tuple[Api, Api]]:
    async with start_app(**overrides) as one, start_app(**overrides) as two:
        for api in (one, two):  # subscribed: near-caches in use
            await eventually(lambda api=api: api.app[appkeys.NEAR_CACHES].current(time.monotonic()),
                             timeout=10)
        yield one, two


async def status_of(api: Api, method: str, path: str, token: str) -> int:
    status, _, _ = await api.request(method, path, token=token)
    return status


async def warm(api: Api, token: str, *paths: str) -> None:
    """Reads that fill ``api``'s near-caches (the second read is served from them)."""
    for path in paths:
        for _ in range(2):
            assert await status_of(api, "GET", path, token) == 200


async def warmed(api: Api, token: str, path: str, is_kept) -> None:
    """Reads ``path`` until ``is_kept()``: an entry is not stored, and not served, while the
    instance's channel is unconfirmed (a busy machine delays its listener)."""
    async def read_and_kept() -> bool:
        assert await status_of(api, "GET", path, token) == 200
        return bool(is_kept())
    await eventually(read_and_kept, timeout=10)


async def refused_within(api: Api, token: str, seconds: float = REVOKED_WITHIN_SECONDS) -> None:
    async def refused() -> bool:
        return await status_of(api, "GET", "/users/me", token) == 401
    await eventually(refused, timeout=seconds, interval=0.02)


async def test_logout_on_one_instance_is_refused_by_the_other_within_a_second(start_app):
    async with two_instances(start_app) as (a, b):
        user = await a.register("nclo")
        await warmed(b, user.token, "/users/me", lambda: near_session(b, user.token) == user.id)
        assert await status_of(a, "POST", "/auth/logout", user.token) == 204
        await refused_within(b, user.token)
        # Forgotten by the invalidation message, not left to expire.
        await eventually(lambda: near_session(b, user.token) is None, timeout=REVOKED_WITHIN_SECONDS)


async def test_logout_all_on_one_instance_is_refused_by_the_other_within_a_second(start_app):
    async with two_instances(start_app) as (a, b):
        user = await a.register("ncla")
        status, body, _ = await b.request("POST", "/auth/login", json={"login": user.username,
                                                                       "password": user.password})
        assert status == 200, body
        second = body["token"]
        await warmed(b, user.token, "/users/me", lambda: near_session(b, user.token) == user.id)
        await warmed(b, second, "/users/me", lambda: near_session(b, second) == user.id)
        assert await status_of(a, "POST", "/auth/logout-all", second) == 204
        await refused_within(b, user.token)
        await refused_within(b, second)


async def test_erasure_on_one_instance_revokes_and_hides_on_the_other_within_a_second(start_app):
    async with two_instances(start_app) as (a, b):
        user, viewer = await a.register("ncer"), await a.register("ncev")
        await warmed(b, user.token, "/users/me", lambda: near_own(b, user.id) is not None)
        await warmed(b, viewer.token, f"/users/{user.id}", lambda: near_profile(b, user.id) is not None)
        status, body, _ = await a.request("DELETE", "/users/me", token=user.token, json={"password": user.password})
        assert status == 202, body
        await refused_within(b, user.token)

        async def hidden() -> bool:
            return await status_of(b, "GET", f"/users/{user.id}", viewer.token) == 404
        await eventually(hidden, timeout=REVOKED_WITHIN_SECONDS, interval=0.02)


async def test_an_expired_session_is_refused_by_an_instance_that_kept_it(start_app):
    ttl = 3
    async with two_instances(start_app, session_ttl_seconds=ttl) as (a, b):
        user = await a.register("ncex")
        await warmed(b, user.token, "/users/me", lambda: near_session(b, user.token) == user.id)
        # Kept no longer than the session lives (its Redis entry's TTL bounds the near one).
        await refused_within(b, user.token, seconds=ttl + REVOKED_WITHIN_SECONDS)


async def test_a_profile_change_on_one_instance_is_served_by_the_other_within_a_second(start_app):
    async with two_instances(start_app) as (a, b):
        owner, viewer = await a.register("ncpc"), await a.register("ncpv")
        await warmed(b, viewer.token, f"/users/{owner.id}",
                     lambda: (near_profile(b, owner.id) or {}).get("display_name") == owner.user["display_name"])
        await warmed(b, owner.token, "/users/me", lambda: near_own(b, owner.id) is not None)
        status, body, _ = await a.request("PATCH", "/users/me", token=owner.token,
                                          json={"display_name": "Renamed", "bio": "new bio"})
        assert status == 200, body

        async def changed_on_b() -> bool:
            _, public, _ = await b.request("GET", f"/users/{owner.id}", token=viewer.token)
            _, own, _ = await b.request("GET", "/users/me", token=owner.token)
            return (public["display_name"], public["bio"], own["display_name"]) == ("Renamed", "new bio", "Renamed")
        await eventually(changed_on_b, timeout=REVOKED_WITHIN_SECONDS, interval=0.02)
        # And at once on the instance that made it.
        _, public, _ = await a.request("GET", f"/users/{owner.id}", token=viewer.token)
        assert public["display_name"] == "Renamed"


async def test_counters_changed_on_one_instance_are_served_by_the_other_within_a_second(start_app):
    async with two_instances(start_app) as (a, b):
        star, fan = await a.register("ncst"), await a.register("ncfn")
        await warmed(b, fan.token, f"/users/{star.id}",
                     lambda: (near_profile(b, star.id) or {}).get("followers_count") == 0)
        await warmed(b, fan.token, "/users/me", lambda: near_own(b, fan.id) is not None)
        assert await status_of(a, "PUT", f"/users/{star.id}/follow", fan.token) == 200

        async def counted_on_b() -> bool:
            _, star_seen, _ = await b.request("GET", f"/users/{star.id}", token=fan.token)
            _, me, _ = await b.request("GET", "/users/me", token=fan.token)
            return star_seen["followers_count"] == 1 and me["following_count"] == 1
        await eventually(counted_on_b, timeout=REVOKED_WITHIN_SECONDS, interval=0.02)
        status, post, _ = await a.request("POST", "/posts", token=star.token, json={"body": "counted"})
        assert status == 201, post

        async def posts_counted_on_b() -> bool:
            _, star_seen, _ = await b.request("GET", f"/users/{star.id}", token=fan.token)
            return star_seen["posts_count"] == 1
        await eventually(posts_counted_on_b, timeout=REVOKED_WITHIN_SECONDS, interval=0.02)


async def test_a_lost_subscription_flushes_the_near_caches(start_app, tmp_path):
    redis_server = RedisServer(tmp_path).start()
    try:
        async with two_instances(start_app, redis_url=redis_server.url, redis_timeout_seconds=0.3) as (a, b):
            owner, viewer = await a.register("ncls"), await a.register("nclv")
            await warmed(b, viewer.token, f"/users/{owner.id}", lambda: near_profile(b, owner.id) is not None)
            near = b.app[appkeys.NEAR_CACHES]
            flushes = near.flushes
            # The listener's connection dropped (Redis itself stays up): whatever was
            # published meanwhile is lost to it, so everything it kept goes.
            admin = aioredis.from_url(redis_server.url)
            try:
                await admin.client_kill_filter(_type="pubsub")
            finally:
                await admin.aclose()
            await eventually(lambda: near.flushes > flushes, timeout=10)
            assert near_profile(b, owner.id) is None
            # Redis down: nothing is served from the near-caches, and a change made
            # meanwhile on the other instance is seen (read from PostgreSQL).
            await eventually(lambda: near.current(time.monotonic()), timeout=10)  # resubscribed
            await warmed(b, viewer.token, f"/users/{owner.id}", lambda: near_profile(b, owner.id) is not None)
            redis_server.stop()
            await eventually(lambda: len(users_of(b).profile_cache.near) == 0, timeout=10)
            status, body, _ = await a.request("PATCH", "/users/me", token=owner.token,
                                              json={"display_name": "Changed while down"})
            assert status == 200, body
            _, seen, _ = await b.request("GET", f"/users/{owner.id}", token=viewer.token)
            assert seen["display_name"] == "Changed while down"
    finally:
        redis_server.stop()


async def test_the_near_caches_are_bounded_whatever_clients_send(start_app):
    async with start_app(near_cache_entries=3) as api:
        users = [await api.register("ncb") for _ in range(5)]
        sessions, profiles = users_of(api).sessions_cache.near, users_of(api).profile_cache.near
        own = users_of(api).profile_cache.near_own

        async def all_read() -> bool:  # (again if the channel was unconfirmed meanwhile)
            for user in users:
                await warm(api, users[0].token, f"/users/{user.id}")
                await warm(api, user.token, "/users/me")
            return len(sessions) == len(profiles) == len(own) == 3
        await eventually(all_read, timeout=30)
        sessions.clear()
        profiles.clear()
        for _ in range(50):  # tokens and ids that name nothing keep nothing
            assert await status_of(api, "GET", "/users/me", uuid.uuid4().hex) == 401
            assert await status_of(api, "GET", f"/users/{uuid.uuid4()}", users[0].token) == 404
        assert len(profiles) == 0 and len(sessions) <= 1  # users[0]'s own session only


def unread_near(api: Api, user_id: str) -> int | None:
    return api.app[appkeys.SERVICES].notifications.unread_counts.get(user_id)


async def unread(api: Api, token: str) -> int:
    status, body, _ = await api.request("GET", "/notifications/unread-count", token=token)
    assert status == 200, body
    return body["count"]


async def test_unread_counts_changed_on_one_instance_are_served_by_the_other_within_a_second(start_app):
    async with two_instances(start_app) as (a, b):
        star, fan = await a.register("ncun"), await a.register("ncuf")
        await eventually(lambda: unread(a, star.token))  # the welcome, delivered by the event bus
        before = await unread(b, star.token)
        await warmed(b, star.token, "/notifications/unread-count", lambda: unread_near(b, star.id) == before)
        assert await status_of(a, "PUT", f"/users/{star.id}/follow", fan.token) == 200
        # Notified by whichever instance's consumer takes the event, some time later...
        async def notified() -> bool:
            _, body, _ = await a.request("GET", "/notifications?unread=true", token=star.token)
            return any(n["type"] == "follow" for n in body["items"])
        await eventually(notified)
        # ...and from then on counted by both within the lease.

        async def counted(api: Api, count: int) -> bool:
            return await unread(api, star.token) == count
        await eventually(lambda: counted(b, before + 1), timeout=REVOKED_WITHIN_SECONDS, interval=0.02)
        # Kept again, the new count (not the one forgotten).
        await warmed(b, star.token, "/notifications/unread-count", lambda: unread_near(b, star.id) == before + 1)
        status, body, _ = await a.request("POST", "/notifications/read-all", token=star.token)
        assert status == 200, body
        await eventually(lambda: counted(b, 0), timeout=REVOKED_WITHIN_SECONDS, interval=0.02)


async def test_forgetting_every_unread_count_reaches_the_other_instance(start_app):
    async with two_instances(start_app) as (a, b):
        reader = await a.register("ncur")
        await eventually(lambda: unread(b, reader.token))  # the welcome
        await warmed(b, reader.token, "/notifications/unread-count", lambda: unread_near(b, reader.id) is not None)
        # What an erasure's notifications step does: whose counts fell is not known.
        await a.app[appkeys.SERVICES].notifications.unread_counts.forget_all()
        await eventually(lambda: unread_near(b, reader.id) is None, timeout=REVOKED_WITHIN_SECONDS)


async def test_a_message_notification_is_counted_by_the_other_instance_within_a_second(start_app):
    """A member with no socket gets a ``message`` notification (written with the other
    offline notices of the sends stored together): their count kept by the other instance
    is forgotten too."""
    async with two_instances(start_app) as (a, b):
        sender, away = await a.register("ncms"), await a.register("ncma")
        await eventually(lambda: unread(b, away.token))  # the welcome
        before = await unread(b, away.token)
        assert unread_near(b, away.id) == before
        status, conversation, _ = await a.request("POST", "/conversations", token=sender.token,
                                                  json={"member_ids": [away.id]})
        assert status == 201, conversation
        status, body, _ = await a.request("POST", f"/conversations/{conversation['id']}/messages",
                                          token=sender.token, json={"body": "are you there?", "client_id": "m-1"})
        assert status == 201, body

        async def counted() -> bool:
            return await unread(b, away.token) == before + 1
        await eventually(counted, timeout=REVOKED_WITHIN_SECONDS, interval=0.02)
        assert unread_near(b, away.id) == before + 1
