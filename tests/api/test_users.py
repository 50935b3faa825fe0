"""Registration, login, logout, profiles: flows and bad inputs."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from tests.helpers.api import is_problem

pytestmark = pytest.mark.asyncio(loop_scope="session")



async def test_register_returns_user_with_email_and_token(api):
    acct = await api.register("reg")
    user = acct.user
    assert user["email"] == acct.email and user["username"] == acct.username
    assert user["followers_count"] == user["following_count"] == user["posts_count"] == 0
    assert user["created_at"].endswith("Z") and "T" in user["created_at"]
    status, me, _ = await api.request("GET", "/users/me", token=acct.token)
    assert status == 200 and me["id"] == acct.id and me["email"] == acct.email


async def test_display_name_defaults_to_username(api):
    suffix = uuid.uuid4().hex[:8]
    status, body, _ = await api.request("POST", "/auth/register", json={
        "email": f"d{suffix}@example.com", "username": f"d{suffix}", "password": "longenough"})
    assert status == 201
    assert body["user"]["display_name"] == f"d{suffix}"


async def test_user_and_profile_are_created_together(api, settings):
    acct = await api.register("tx")
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        row = await conn.fetchrow("SELECT u.username, p.display_name FROM users u JOIN profiles p "
                                  "ON p.user_id = u.id WHERE u.id = $1", uuid.UUID(acct.id))
        token_rows = await conn.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", uuid.UUID(acct.id))
        raw_token = await conn.fetchval("SELECT count(*) FROM sessions WHERE token_hash = $1", acct.token.encode())
        outbox = await conn.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'user.registered' "
                                     "AND payload->>'user_id' = $1", acct.id)
    finally:
        await conn.close()
    assert row["username"] == acct.username
    assert token_rows == 1 and raw_token == 0  # stored hashed, never as issued
    assert outbox == 1


@pytest.mark.parametrize("field,value", [
    ("email", "not-an-email"), ("email", ""), ("username", "ab"), ("username", "has space"),
    ("username", "x" * 31), ("username", "émile"), ("password", "short"), ("password", "p" * 129),
    ("email", 12345),
])
async def test_register_rejects_invalid_fields(api, field, value):
    suffix = uuid.uuid4().hex[:8]
    payload = {"email": f"v{suffix}@example.com", "username": f"v{suffix}", "password": "longenough"}
    payload[field] = value
    status, body, resp = await api.request("POST", "/auth/register", json=payload)
    is_problem(status, body, resp, 400)
    assert any(e["field"] == field for e in body["errors"]), body
    # Nothing stored half-way: the valid parts of the request did not create an account.
    if field != "username":
        status, _, _ = await api.request("POST", "/auth/login", json={"login": payload["username"],
                                                                      "password": "longenough"})
        assert status == 401


async def test_register_missing_fields(api):
    status, body, resp = await api.request("POST", "/auth/register", json={"email": "a@b.co"})
    is_problem(status, body, resp, 400)
    assert {e["field"] for e in body["errors"]} >= {"username", "password"}


async def test_duplicate_email_and_username_are_409_case_insensitively(api):
    acct = await api.register("dup")
    status, body, resp = await api.request("POST", "/auth/register", json={
        "email": acct.email.upper(), "username": "other" + uuid.uuid4().hex[:8], "password": "longenough"})
    is_problem(status, body, resp, 409)
    assert "email" in body["detail"]
    status, body, resp = await api.request("POST", "/auth/register", json={
        "email": f"o{uuid.uuid4().hex[:8]}@example.com", "username": acct.username.upper(),
        "password": "longenough"})
    is_problem(status, body, resp, 409)
    assert "username" in body["detail"]


async def test_concurrent_duplicate_registrations_make_one_account(api):
    suffix = uuid.uuid4().hex[:8]
    payload = {"email": f"race{suffix}@example.com", "username": f"race{suffix}", "password": "longenough"}
    results = await asyncio.gather(*(api.request("POST", "/auth/register", json=payload) for _ in range(5)))
    statuses = sorted(r[0] for r in results)
    assert statuses == [201, 409, 409, 409, 409]


async def test_malformed_json_is_400(api):
    status, body, resp = await api.request("POST", "/auth/register", data=b'{"email": ',
                                           headers={"Content-Type": "application/json"})
    is_problem(status, body, resp, 400)
    assert "Malformed JSON" in body["detail"]


async def test_wrong_shape_is_400(api):
    status, body, resp = await api.request("POST", "/auth/register", json=["a", "list"])
    is_problem(status, body, resp, 400)
    assert body["errors"]


async def test_non_json_content_type_is_415(api):
    status, body, resp = await api.request("POST", "/auth/login", data=b"login=a&password=b",
                                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    is_problem(status, body, resp, 415)


async def test_empty_body_is_400(api):
    status, body, resp = await api.request("POST", "/auth/login")
    is_problem(status, body, resp, 400)


async def test_body_over_64_kib_is_413(api):
    big = {"login": "x", "password": "y", "padding": "z" * (64 * 1024)}
    status, body, resp = await api.request("POST", "/auth/login", json=big)
    is_problem(status, body, resp, 413)
    status, _, _ = await api.request("GET", "/healthz")
    assert status == 200


async def test_unknown_route_and_method_are_problems(api):
    status, body, resp = await api.request("GET", "/no/such/thing")
    is_problem(status, body, resp, 404)
    status, body, resp = await api.request("DELETE", "/auth/login")
    is_problem(status, body, resp, 405)


async def test_login_by_email_or_username_any_case(api):
    acct = await api.register("login")
    for login in (acct.email, acct.username, acct.username.upper(), acct.email.upper()):
        status, body, _ = await api.request("POST", "/auth/login", json={"login": login, "password": acct.password})
        assert status == 200, body
        assert body["user"]["id"] == acct.id and body["token"] and body["token"] != acct.token


async def test_wrong_password_and_unknown_user_are_indistinguishable(api):
    acct = await api.register("cred")
    s1, b1, r1 = await api.request("POST", "/auth/login", json={"login": acct.username, "password": "wrong-pass"})
    s2, b2, r2 = await api.request("POST", "/auth/login", json={"login": "nobody" + uuid.uuid4().hex[:6],
                                                               "password": "wrong-pass"})
    is_problem(s1, b1, r1, 401)
    is_problem(s2, b2, r2, 401)
    assert b1["detail"] == b2["detail"] and b1["title"] == b2["title"]


async def test_missing_or_bad_token_is_401(api):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer "}):
        status, body, resp = await api.request("GET", "/users/me", headers=headers)
        is_problem(status, body, resp, 401)


async def test_logout_revokes_only_that_token(api):
    acct = await api.register("out")
    _, second, _ = await api.request("POST", "/auth/login", json={"login": acct.username, "password": acct.password})
    status, _, _ = await api.request("POST", "/auth/logout", token=acct.token)
    assert status == 204
    status, _, _ = await api.request("GET", "/users/me", token=acct.token)
    assert status == 401
    status, _, _ = await api.request("POST", "/auth/logout", token=acct.token)
    assert status == 401
    status, me, _ = await api.request("GET", "/users/me", token=second["token"])
    assert status == 200 and me["id"] == acct.id


async def test_patch_me_updates_profile_and_others_see_it_at_once(api):
    acct = await api.register("patch")
    other = await api.register("viewer")
    status, before, _ = await api.request("GET", f"/users/{acct.id}", token=other.token)
    assert status == 200 and before["bio"] == ""  # now cached
    status, after, _ = await api.request("PATCH", "/users/me", token=acct.token, json={
        "display_name": "New Name", "bio": "hello", "avatar_url": "https://img.example.com/a.png"})
    assert status == 200
    assert after["display_name"] == "New Name" and after["bio"] == "hello" and after["email"] == acct.email
    for ref in (acct.id, acct.username):
        status, seen, _ = await api.request("GET", f"/users/{ref}", token=other.token)
        assert status == 200
        assert seen["display_name"] == "New Name" and seen["bio"] == "hello"
        assert seen["avatar_url"] == "https://img.example.com/a.png"
        assert "email" not in seen


async def test_patch_me_partial_keeps_other_fields(api):
    acct = await api.register("part")
    await api.request("PATCH", "/users/me", token=acct.token, json={"bio": "first"})
    status, body, _ = await api.request("PATCH", "/users/me", token=acct.token, json={"display_name": "Only"})
    assert status == 200 and body["bio"] == "first" and body["display_name"] == "Only"


@pytest.mark.parametrize("payload", [
    {"display_name": ""}, {"display_name": None}, {"bio": "b" * 501}, {"avatar_url": "javascript:alert(1)"},
    {"email": "new@example.com"}, {"display_name": 5},
])
async def test_patch_me_rejects_bad_input_and_changes_nothing(api, payload):
    acct = await api.register("badpatch")
    status, body, resp = await api.request("PATCH", "/users/me", token=acct.token, json=payload)
    is_problem(status, body, resp, 400)
    status, me, _ = await api.request("GET", "/users/me", token=acct.token)
    assert me["display_name"] == acct.user["display_name"] and me["bio"] == "" and me["email"] == acct.email


async def test_public_profile_by_id_and_username(api):
    acct = await api.register("pub")
    other = await api.register("look")
    for ref in (acct.id, acct.username, acct.username.upper()):
        status, body, _ = await api.request("GET", f"/users/{ref}", token=other.token)
        assert status == 200 and body["id"] == acct.id
        assert set(body) == {"id", "username", "display_name", "bio", "avatar_url", "created_at",
                             "followers_count", "following_count", "posts_count"}


async def test_unknown_user_is_404(api):
    acct = await api.register("nf")
    for ref in (str(uuid.uuid4()), "nobody_here_" + uuid.uuid4().hex[:6]):
        status, body, resp = await api.request("GET", f"/users/{ref}", token=acct.token)
        is_problem(status, body, resp, 404)
