"""Failed-login limits per account and per address, the per-token limit, and the off switch."""
from __future__ import annotations

import uuid

import pytest

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
        status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.email, "password": acct.password})
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
