"""Failed-login limits per account and per address (also under concurrency), the
registration limit, the bounded password-hashing queue, the per-token limit, and the off
switch."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from server import appkeys

pytestmark = pytest.mark.asyncio(loop_scope="session")


def fresh_namespace() -> str:
    # Counters per address are shared by every test from 127.0.0.1: give each its own.
    return "rl-" + uuid.uuid4().hex[:8]


async def test_failed_logins_per_account_are_limited(start_app):
    async with start_app(namespace=fresh_namespace(), login_failures_per_account=3, login_failures_per_address=1000) as api:
        acct = await api.register("rl")
        for _ in range(3):
            status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.username, "password": "wrong-one"})
            assert status == 401
        status, body, resp = await api.request("POST", "/auth/login", json={"login": acct.username, "password": "wrong-one"})
        assert status == 429 and body["status"] == 429
        assert int(resp.headers["Retry-After"]) > 0
        # Even the right password waits for the window: the attacker can't tell.
        status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.username, "password": acct.password})
        assert status == 429
        # Other accounts are not affected by this account's limit.
        other = await api.register("rl2")
        status, _, _ = await api.request("POST", "/auth/login", json={"login": other.username, "password": other.password})
        assert status == 200


async def test_failed_logins_per_address_are_limited(start_app):
    async with start_app(namespace=fresh_namespace(), login_failures_per_account=1000, login_failures_per_address=4) as api:
        accounts = [await api.register("addr") for _ in range(2)]
        for i in range(4):
            status, _, _ = await api.request("POST", "/auth/login", json={
                "login": accounts[i % 2].username, "password": "wrong-one"})
            assert status == 401
        status, _, resp = await api.request("POST", "/auth/login", json={
            "login": accounts[0].username, "password": accounts[0].password})
        assert status == 429 and "Retry-After" in resp.headers


async def test_successful_login_resets_the_account_counter(start_app):
    async with start_app(namespace=fresh_namespace(), login_failures_per_account=3, login_failures_per_address=1000) as api:
        acct = await api.register("reset")
        for _ in range(2):
            await api.request("POST", "/auth/login", json={"login": acct.username, "password": "wrong-one"})
        status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.username, "password": acct.password})
        assert status == 200
        for _ in range(2):
            status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.username, "password": "wrong-one"})
            assert status == 401


async def test_per_token_request_limit(start_app):
    async with start_app(namespace=fresh_namespace(), requests_per_token_per_minute=5) as api:
        acct = await api.register("tok")
        statuses = [(await api.request("GET", "/users/me", token=acct.token))[0] for _ in range(7)]
        assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429]


async def test_rate_limits_off_switch(start_app):
    async with start_app(namespace=fresh_namespace(), rate_limits=False, login_failures_per_account=1, requests_per_token_per_minute=2) as api:
        acct = await api.register("off")
        for _ in range(4):
            status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.username, "password": "wrong-one"})
            assert status == 401
        statuses = [(await api.request("GET", "/users/me", token=acct.token))[0] for _ in range(4)]
        assert statuses == [200] * 4


async def test_forwarded_address_counts_only_behind_a_trusted_proxy(start_app):
    async with start_app(namespace=fresh_namespace(), trust_forwarded_for=True, login_failures_per_account=1000,
                         login_failures_per_address=2) as api:
        acct = await api.register("fwd")
        for _ in range(2):
            await api.request("POST", "/auth/login", json={"login": acct.username, "password": "wrong-one"},
                              headers={"X-Forwarded-For": "203.0.113.7"})
        status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.username, "password": acct.password},
                                         headers={"X-Forwarded-For": "203.0.113.7"})
        assert status == 429
        # Another client address behind the same proxy is not limited.
        status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.username, "password": acct.password},
                                         headers={"X-Forwarded-For": "198.51.100.9"})
        assert status == 200


async def test_per_token_limit_is_shared_by_instances(start_app):
    # Synced on every request: the two instances see one window for the token.
    namespace = fresh_namespace()
    limits = {"namespace": namespace, "requests_per_token_per_minute": 5, "request_limit_sync_seconds": 0}
    async with start_app(**limits) as api_a, start_app(**limits) as api_b:
        acct = await api_a.register("shared")
        on_a = [(await api_a.request("GET", "/users/me", token=acct.token))[0] for _ in range(3)]
        on_b = [(await api_b.request("GET", "/users/me", token=acct.token))[0] for _ in range(3)]
        assert on_a == [200] * 3 and on_b == [200, 200, 429]
        status, body, resp = await api_a.request("GET", "/users/me", token=acct.token)
        assert status == 429 and int(resp.headers["Retry-After"]) >= 1


async def test_per_token_limit_counts_each_token_apart(start_app):
    async with start_app(namespace=fresh_namespace(), requests_per_token_per_minute=3) as api:
        first, second = await api.register("tok1"), await api.register("tok2")
        assert [(await api.request("GET", "/users/me", token=first.token))[0] for _ in range(4)] == [200] * 3 + [429]
        # Another token of another user is not held back by the first one's window.
        assert (await api.request("GET", "/users/me", token=second.token))[0] == 200


# --- under concurrency: attempts are reserved before the password is hashed ---------------

# A burst opens dozens of Redis connections at once on a busy machine: a longer Redis
# timeout than production's keeps these tests about the limits, not about the machine.
BURST = {"redis_timeout_seconds": 5.0}


def passwords_of(api):
    return api.app[appkeys.SERVICES].users.passwords


async def all_at_once(api, n: int, method: str, path: str, body_of, token: str | None = None):
    return await asyncio.gather(*(api.request(method, path, json=body_of(i), token=token) for i in range(n)))


async def assert_burst_checked_at_most(api, limit: int, method: str, path: str, body_of,
                                       token: str | None = None) -> None:
    """40 wrong passwords at once: at most ``limit`` reach argon2 and get 401; every other
    one is a 429 with Retry-After."""
    passwords = passwords_of(api)
    before = passwords.verifications
    results = await all_at_once(api, 40, method, path, body_of, token)
    statuses = [status for status, _, _ in results]
    assert statuses.count(401) <= limit and statuses.count(401) + statuses.count(429) == len(results), [
        body for status, body, _ in results if status not in (401, 429)]
    for status, body, resp in results:
        if status == 429:
            assert body["status"] == 429 and int(resp.headers["Retry-After"]) >= 1
    assert passwords.verifications - before <= limit


async def test_concurrent_wrong_logins_are_checked_at_most_limit_times(start_app):
    async with start_app(namespace=fresh_namespace(), **BURST, login_failures_per_account=10,
                         login_failures_per_address=1000) as api:
        acct = await api.register("burst")
        await assert_burst_checked_at_most(api, 10, "POST", "/auth/login",
                                           lambda i: {"login": acct.username, "password": f"wrong-{i}"})
        status, _, resp = await api.request("POST", "/auth/login", json={"login": acct.username, "password": acct.password})
        assert status == 429 and int(resp.headers["Retry-After"]) >= 1


async def test_concurrent_wrong_logins_per_address_are_checked_at_most_limit_times(start_app):
    async with start_app(namespace=fresh_namespace(), **BURST, login_failures_per_account=1000,
                         login_failures_per_address=5) as api:
        accounts = [await api.register("addrburst") for _ in range(4)]
        await assert_burst_checked_at_most(api, 5, "POST", "/auth/login",
                                           lambda i: {"login": accounts[i % 4].email, "password": "wrong-one"})


async def test_concurrent_wrong_passwords_on_erasure_request_are_checked_at_most_limit_times(start_app):
    async with start_app(namespace=fresh_namespace(), **BURST, login_failures_per_account=10,
                         login_failures_per_address=1000) as api:
        acct = await api.register("eraseburst")
        await assert_burst_checked_at_most(api, 10, "DELETE", "/users/me", lambda i: {"password": f"wrong-{i}"},
                                           token=acct.token)
        # Nothing happened to the account: it is still active.
        status, _, _ = await api.request("GET", "/users/me", token=acct.token)
        assert status == 200


async def test_concurrent_wrong_restores_are_checked_at_most_limit_times(start_app):
    async with start_app(namespace=fresh_namespace(), **BURST, login_failures_per_account=10,
                         login_failures_per_address=1000) as api:
        acct = await api.register("restoreburst")
        status, _, _ = await api.request("DELETE", "/users/me", json={"password": acct.password}, token=acct.token)
        assert status == 202
        await assert_burst_checked_at_most(api, 10, "POST", "/auth/restore",
                                           lambda i: {"login": acct.email, "password": f"wrong-{i}"})


async def test_a_right_password_gives_the_address_its_attempt_back(start_app):
    async with start_app(namespace=fresh_namespace(), login_failures_per_account=1000,
                         login_failures_per_address=3) as api:
        acct = await api.register("giveback")
        for _ in range(5):
            status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.email, "password": acct.password})
            assert status == 200
        for _ in range(3):
            status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.email, "password": "wrong-one"})
            assert status == 401
        status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.email, "password": acct.password})
        assert status == 429


# --- username and email have counters of their own -----------------------------------------

async def test_failures_on_a_username_do_not_limit_its_email_and_vice_versa(start_app):
    async with start_app(namespace=fresh_namespace(), login_failures_per_account=3,
                         login_failures_per_address=1000) as api:
        by_name, by_email = await api.register("byname"), await api.register("byemail")
        for _ in range(3):
            await api.request("POST", "/auth/login", json={"login": by_name.username, "password": "wrong-one"})
            await api.request("POST", "/auth/login", json={"login": by_email.email.upper(), "password": "wrong-one"})
        # Limited as typed, whatever the case...
        assert (await api.request("POST", "/auth/login", json={"login": by_name.username.upper(), "password": "x"}))[0] == 429
        assert (await api.request("POST", "/auth/login", json={"login": by_email.email, "password": "x"}))[0] == 429
        # ...but the other identifier of the same account tells nothing: a wrong password is
        # still checked (401), the right one logs in.
        assert (await api.request("POST", "/auth/login", json={"login": by_name.email, "password": "x"}))[0] == 401
        assert (await api.request("POST", "/auth/login", json={"login": by_email.username, "password": "x"}))[0] == 401
        assert (await api.request("POST", "/auth/login", json={
            "login": by_name.email, "password": by_name.password}))[0] == 200
        assert (await api.request("POST", "/auth/login", json={
            "login": by_email.username, "password": by_email.password}))[0] == 200


async def test_an_unknown_login_is_limited_exactly_like_a_known_one(start_app):
    async with start_app(namespace=fresh_namespace(), login_failures_per_account=3,
                         login_failures_per_address=1000) as api:
        known = await api.register("known")
        unknown = f"nobody_{uuid.uuid4().hex[:8]}"
        answers = {}
        for login in (known.username, unknown):
            statuses = []
            for _ in range(4):
                status, body, resp = await api.request("POST", "/auth/login", json={"login": login, "password": "wrong-one"})
                statuses.append(status)
            answers[login] = (statuses, {k: v for k, v in body.items() if k != "instance"},
                              resp.headers.get("Retry-After") is not None)
        assert answers[known.username] == answers[unknown]
        assert answers[unknown][0] == [401, 401, 401, 429]
        # The locked username's email answers like an email that names no account.
        for login in (known.email, f"{unknown}@example.com"):
            assert (await api.request("POST", "/auth/login", json={"login": login, "password": "wrong-one"}))[0] == 401


# --- registration per client address ------------------------------------------------------------

def registration(i: int) -> dict:
    suffix = uuid.uuid4().hex[:8]
    return {"email": f"reg{i}{suffix}@example.com", "username": f"reg{i}_{suffix}", "password": "correct horse battery"}


async def test_registrations_per_address_are_limited_under_concurrency(start_app):
    async with start_app(namespace=fresh_namespace(), **BURST, trust_forwarded_for=True,
                         registrations_per_address_per_hour=5) as api:
        passwords = passwords_of(api)
        before = passwords.hashes
        results = await asyncio.gather(*(
            api.request("POST", "/auth/register", json=registration(i), headers={"X-Forwarded-For": "203.0.113.20"})
            for i in range(20)))
        statuses = [status for status, _, _ in results]
        assert statuses.count(201) == 5 and statuses.count(429) == 15, statuses
        for status, body, resp in results:
            if status == 429:
                assert body["status"] == 429 and int(resp.headers["Retry-After"]) >= 1
        # Refused registrations hashed nothing.
        assert passwords.hashes - before == 5
        # Another address is not held back.
        status, _, _ = await api.request("POST", "/auth/register", json=registration(99),
                                         headers={"X-Forwarded-For": "198.51.100.20"})
        assert status == 201


async def test_registration_limit_is_off_with_rate_limits(start_app):
    async with start_app(namespace=fresh_namespace(), rate_limits=False, registrations_per_address_per_hour=1) as api:
        for i in range(3):
            status, _, _ = await api.request("POST", "/auth/register", json=registration(i))
            assert status == 201


# --- the password-hashing queue is bounded ----------------------------------------------------

async def test_password_hashing_past_its_queue_is_refused_at_once_with_503(start_app):
    # One thread, no waiting room, and a hash slow enough that the burst overlaps it.
    async with start_app(namespace=fresh_namespace(), **BURST, rate_limits=False, password_hash_threads=1,
                         password_hash_queue_max=0, argon2_time_cost=3, argon2_memory_kib=65536) as api:
        passwords = passwords_of(api)
        before = passwords.hashes
        results = await asyncio.gather(*(api.request("POST", "/auth/register", json=registration(i)) for i in range(20)))
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {201, 503} and statuses.count(503) >= 1, statuses
        for status, body, resp in results:
            if status == 503:
                assert resp.headers["Content-Type"].startswith("application/problem+json")
                assert body["status"] == 503 and int(resp.headers["Retry-After"]) >= 1
        # A refused registration queued no hash and stored nothing.
        assert passwords.hashes - before == statuses.count(201)
        assert passwords._jobs == 0


async def test_a_login_refused_for_a_busy_pool_does_not_count_as_a_failure(start_app):
    async with start_app(namespace=fresh_namespace(), **BURST, login_failures_per_account=10, login_failures_per_address=1000,
                         password_hash_threads=1, password_hash_queue_max=0,
                         argon2_time_cost=3, argon2_memory_kib=65536) as api:
        acct = await api.register("busy")
        results = await all_at_once(api, 10, "POST", "/auth/login", lambda i: {"login": acct.username, "password": "x"})
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {401, 503} and 503 in statuses, statuses
        # The 503s were given back: the account has exactly its unchecked attempts left.
        for _ in range(10 - statuses.count(401)):
            assert (await api.request("POST", "/auth/login", json={"login": acct.username, "password": "x"}))[0] == 401
        assert (await api.request("POST", "/auth/login", json={"login": acct.username, "password": "x"}))[0] == 429
