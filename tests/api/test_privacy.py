"""GDPR endpoints: export, erasure request, restore inside and after the window, audit."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import orjson
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from tests.helpers.api import is_problem
from tests.helpers.waiting import eventually
from tests.privacy_helpers import pg, subject

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def audit_actions(settings, value: str) -> list[str]:
    conn = await pg(settings)
    try:
        rows = await conn.fetch("SELECT action FROM audit_log WHERE subject = $1 ORDER BY id", subject(settings, value))
    finally:
        await conn.close()
    return [r["action"] for r in rows]


# --- erasure request ---------------------------------------------------------------------

async def test_erasure_hides_the_account_at_once(api, settings):
    alice, bob = await api.register("era"), await api.register("obs")
    status, post, _ = await api.request("POST", "/posts", token=alice.token, json={"body": "soon gone"})
    assert status == 201
    # A second session, to see that every session goes.
    status, login, _ = await api.request("POST", "/auth/login", json={"login": alice.email, "password": alice.password})
    assert status == 200
    status, body, _ = await api.request("GET", f"/users/{alice.username}", token=bob.token)
    assert status == 200  # cached in Redis now; the erasure must drop it

    status, body, _ = await api.request("DELETE", "/users/me", token=alice.token, json={"password": alice.password})
    assert status == 202, body
    assert body["status"] == "pending_erasure"
    purge_after = datetime.fromisoformat(body["purge_after"].replace("Z", "+00:00"))
    expected = datetime.now(timezone.utc) + timedelta(days=settings.erasure_recovery_days)
    assert abs((purge_after - expected).total_seconds()) < 300

    for token in (alice.token, login["token"]):
        status, body, resp = await api.request("GET", "/users/me", token=token)
        is_problem(status, body, resp, 401)
    status, body, resp = await api.request("POST", "/auth/login", json={"login": alice.username, "password": alice.password})
    is_problem(status, body, resp, 401)
    for ref in (alice.id, alice.username):
        status, body, resp = await api.request("GET", f"/users/{ref}", token=bob.token)
        is_problem(status, body, resp, 404)
    status, body, resp = await api.request("GET", f"/posts/{post['id']}", token=bob.token)
    is_problem(status, body, resp, 404)

    conn = await pg(settings)
    try:
        sessions = await conn.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", uuid.UUID(alice.id))
        events = await conn.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'user.erasure_requested' "
                                     "AND payload->>'user_id' = $1", alice.id)
    finally:
        await conn.close()
    assert sessions == 0 and events == 1
    assert "erasure.requested" in await audit_actions(settings, alice.id)


async def test_erasure_refuses_a_wrong_password_and_bad_bodies(api, settings):
    acct = await api.register("erb")
    status, body, resp = await api.request("DELETE", "/users/me", token=acct.token, json={"password": "not the one"})
    is_problem(status, body, resp, 401)
    for bad in ({}, {"password": ""}, {"password": 5}, ["x"]):
        status, body, resp = await api.request("DELETE", "/users/me", token=acct.token, json=bad)
        is_problem(status, body, resp, 400)
    status, body, resp = await api.request("DELETE", "/users/me", token=acct.token, data=b"{not json",
                                           headers={"Content-Type": "application/json"})
    is_problem(status, body, resp, 400)
    status, body, resp = await api.request("DELETE", "/users/me", json={"password": acct.password})
    is_problem(status, body, resp, 401)
    # Nothing changed: still active, still logged in.
    status, me, _ = await api.request("GET", "/users/me", token=acct.token)
    assert status == 200 and me["id"] == acct.id
    assert "erasure.password_refused" in await audit_actions(settings, acct.id)


# --- restore ---------------------------------------------------------------------------

async def test_restore_inside_the_window_brings_the_account_back(api, settings):
    acct, other = await api.register("rst"), await api.register("rso")
    status, _, _ = await api.request("DELETE", "/users/me", token=acct.token, json={"password": acct.password})
    assert status == 202
    status, body, resp = await api.request("POST", "/auth/restore", json={"login": acct.email, "password": "wrong one!"})
    is_problem(status, body, resp, 401)

    status, body, _ = await api.request("POST", "/auth/restore", json={"login": acct.username, "password": acct.password})
    assert status == 200, body
    assert body["user"]["id"] == acct.id and body["user"]["email"] == acct.email and body["token"]
    status, me, _ = await api.request("GET", "/users/me", token=body["token"])
    assert status == 200 and me["id"] == acct.id
    status, _, _ = await api.request("GET", "/users/me", token=acct.token)
    assert status == 401  # the sessions revoked by the erasure stay revoked
    status, profile, _ = await api.request("GET", f"/users/{acct.username}", token=other.token)
    assert status == 200 and profile["id"] == acct.id
    status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.email, "password": acct.password})
    assert status == 200
    conn = await pg(settings)
    try:
        row = await conn.fetchrow("SELECT status, purge_after FROM users WHERE id = $1", uuid.UUID(acct.id))
        restored = await conn.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'user.erasure_restored' "
                                       "AND payload->>'user_id' = $1", acct.id)
    finally:
        await conn.close()
    assert row["status"] == "active" and row["purge_after"] is None and restored == 1
    actions = await audit_actions(settings, acct.id)
    assert actions.index("erasure.requested") < actions.index("erasure.restored")


async def test_restore_is_refused_for_an_active_account(api):
    acct = await api.register("rsa")
    status, body, resp = await api.request("POST", "/auth/restore", json={"login": acct.email, "password": acct.password})
    is_problem(status, body, resp, 401)
    for bad in ({}, {"login": "", "password": "x"}, {"login": acct.email}):
        status, body, resp = await api.request("POST", "/auth/restore", json=bad)
        is_problem(status, body, resp, 400)


async def test_restore_is_refused_after_the_window(api, settings):
    acct = await api.register("rsw")
    status, _, _ = await api.request("DELETE", "/users/me", token=acct.token, json={"password": acct.password})
    assert status == 202
    conn = await pg(settings)
    try:
        await conn.execute("UPDATE users SET purge_after = now() - interval '1 second' WHERE id = $1",
                           uuid.UUID(acct.id))
    finally:
        await conn.close()
    status, body, resp = await api.request("POST", "/auth/restore", json={"login": acct.email, "password": acct.password})
    is_problem(status, body, resp, 401)
    status, wrong, _ = await api.request("POST", "/auth/restore", json={"login": acct.email, "password": "other pass"})
    assert wrong["detail"] == body["detail"]  # one message: no hint that the account exists


async def test_a_zero_recovery_window_allows_no_restore(start_app):
    async with start_app(erasure_recovery_days=0, run_workers=False) as api0:
        acct = await api0.register("rsz")
        status, body, _ = await api0.request("DELETE", "/users/me", token=acct.token, json={"password": acct.password})
        assert status == 202
        status, body, resp = await api0.request("POST", "/auth/restore",
                                                json={"login": acct.email, "password": acct.password})
        is_problem(status, body, resp, 401)


# --- audit -------------------------------------------------------------------------------

async def test_registration_and_login_failures_are_audited_pseudonymised(api, settings):
    acct = await api.register("aud")
    status, _, _ = await api.request("POST", "/auth/login", json={"login": acct.email.upper(), "password": "bad guess"})
    assert status == 401
    assert await audit_actions(settings, acct.id) == ["user.registered"]
    assert await audit_actions(settings, acct.email) == ["auth.login_failed"]
    conn = await pg(settings)
    try:
        raw = await conn.fetchval("SELECT count(*) FROM audit_log a WHERE strpos(lower(a::text), lower($1)) > 0 "
                                  "OR strpos(lower(a::text), $2) > 0", acct.email, acct.id)
    finally:
        await conn.close()
    assert raw == 0


async def test_audit_log_is_append_only(api, settings):
    await api.register("apo")
    conn = await pg(settings)
    try:
        for statement in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM audit_log") > 0
    finally:
        await conn.close()


# --- export ------------------------------------------------------------------------------

async def test_export_streams_everything_about_the_user(api, settings):
    acct = await api.register("exp")
    other = await api.register("exo")
    status, _, _ = await api.request("PATCH", "/users/me", token=acct.token, json={"bio": "likes jazz"})
    assert status == 200
    await api.request("POST", "/auth/login", json={"login": acct.username, "password": "nope nope"})
    status, theirs, _ = await api.request("POST", "/posts", token=other.token, json={"body": "other's post"})
    assert status == 201
    status, _, _ = await api.request("PUT", f"/posts/{theirs['id']}/like", token=acct.token)
    assert status == 200
    status, comment, _ = await api.request("POST", f"/posts/{theirs['id']}/comments", token=acct.token,
                                           json={"body": "nice one"})
    assert status == 201
    status, _, _ = await api.request("POST", f"/posts/{theirs['id']}/comments", token=other.token,
                                     json={"body": "other's private reply"})
    assert status == 201
    assert (await api.request("PUT", f"/users/{other.id}/follow", token=acct.token))[0] == 200
    assert (await api.request("PUT", f"/users/{acct.id}/follow", token=other.token))[0] == 200
    status, hosted, _ = await api.request("POST", "/events", token=acct.token, json={
        "title": "my party", "starts_at": "2030-01-01T20:00:00Z"})
    assert status == 201, hosted
    status, their_event, _ = await api.request("POST", "/events", token=other.token, json={
        "title": "their meetup", "description": "other's private notes", "starts_at": "2030-02-01T20:00:00Z"})
    assert status == 201
    assert (await api.request("PUT", f"/events/{their_event['id']}/rsvp", token=acct.token,
                              json={"status": "going"}))[0] == 200
    status, direct, _ = await api.request("POST", "/conversations", token=acct.token, json={"member_ids": [other.id]})
    assert status == 201, direct
    status, mine, _ = await api.request("POST", f"/conversations/{direct['id']}/messages", token=acct.token,
                                        json={"body": "hello from me", "client_id": "c-1"})
    assert status == 201
    status, _, _ = await api.request("POST", f"/conversations/{direct['id']}/messages", token=other.token,
                                     json={"body": "other's private answer", "client_id": "c-2"})
    assert status == 201

    async def welcomed() -> bool:
        status, notes, _ = await api.request("GET", "/notifications", token=acct.token)
        return status == 200 and any(n["type"] == "welcome" for n in notes["items"])

    await eventually(welcomed)
    # Thousands of rows in each store section, bulk inserted.
    uid = uuid.UUID(acct.id)
    conn = await pg(settings)
    try:
        await conn.executemany(
            "INSERT INTO audit_log (action, subject, details) VALUES ('test.bulk', $1, $2)",
            [(subject(settings, acct.id), {"n": i}) for i in range(3000)])
        await conn.execute(
            "INSERT INTO posts (author_id, body, created_at) "
            "SELECT $1, 'bulk ' || n, now() - make_interval(secs => n) FROM generate_series(1, 2500) n", uid)
        await conn.execute(
            "INSERT INTO comments (post_id, author_id, body) SELECT id, $1, 'self ' || body FROM posts "
            "WHERE author_id = $1", uid)
        await conn.execute("INSERT INTO likes (post_id, user_id) SELECT id, $1 FROM posts WHERE author_id = $1", uid)
        expected = {
            "posts": await conn.fetchval("SELECT count(*) FROM posts WHERE author_id = $1", uid),
            "comments": await conn.fetchval("SELECT count(*) FROM comments WHERE author_id = $1", uid),
            "likes": await conn.fetchval("SELECT count(*) FROM likes WHERE user_id = $1", uid),
        }
    finally:
        await conn.close()
    assert expected == {"posts": 2500, "comments": 2501, "likes": 2501}
    mongo = AsyncMongoClient(settings.mongo_url)
    try:
        db = mongo[settings.mongo_db]
        now = datetime.now(timezone.utc)
        await db["messages"].insert_many([
            {"_id": ObjectId(), "conversationId": direct["id"], "senderId": acct.id, "body": f"bulk {i}",
             "clientId": f"bulk-{i}", "createdAt": now} for i in range(2000)])
        await db["notifications"].insert_many([
            {"_id": ObjectId(), "userId": acct.id, "type": "like", "message": f"bulk {i}", "read": False,
             "createdAt": now, "metadata": {"actorId": other.id}, "sourceId": f"bulk-{i}"} for i in range(1500)])
        expected["messages"] = await db["messages"].count_documents({"senderId": acct.id})
        expected["notifications"] = await db["notifications"].count_documents({"userId": acct.id})
    finally:
        await mongo.close()
    assert expected["messages"] == 2001 and expected["notifications"] >= 1501

    status, raw, resp = await api.request("GET", "/users/me/export", token=acct.token)
    assert status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    doc = raw if isinstance(raw, dict) else orjson.loads(raw)
    assert doc["format"] == "pulse-export/1"
    account = doc["account"]
    assert account["id"] == acct.id and account["email"] == acct.email and account["bio"] == "likes jazz"
    assert account["status"] == "active"
    assert len(doc["sessions"]) == 1 and doc["sessions"][0]["expires_at"]
    bulk = [e for e in doc["audit"] if e["action"] == "test.bulk"]
    assert [e["details"]["n"] for e in bulk] == list(range(3000))
    actions = {e["action"] for e in doc["audit"]}
    assert {"user.registered", "auth.login_failed"} <= actions
    for section, count in expected.items():
        assert len(doc[section]) == count, section
    assert len({p["id"] for p in doc["posts"]}) == 2500  # no page repeated or skipped
    assert {"id": comment["id"], "post_id": theirs["id"], "body": "nice one"}.items() <= \
        next(c for c in doc["comments"] if c["id"] == comment["id"]).items()
    assert theirs["id"] in {like["post_id"] for like in doc["likes"]}
    assert [f["user_id"] for f in doc["following"]] == [other.id]
    assert [f["user_id"] for f in doc["followers"]] == [other.id]
    assert [(e["id"], e["title"]) for e in doc["events_hosted"]] == [(hosted["id"], "my party")]
    assert [(r["event_id"], r["status"]) for r in doc["rsvps"]] == [(their_event["id"], "going")]
    assert [(c["id"], sorted(c["member_ids"])) for c in doc["conversations"]] == [
        (direct["id"], sorted([acct.id, other.id]))]
    assert doc["messages"][0] == {**mine, "conversation_id": direct["id"]}
    assert len({m["id"] for m in doc["messages"]}) == 2001
    assert any(n["type"] == "welcome" for n in doc["notifications"])
    text = orjson.dumps(doc).decode()
    assert "password" not in text and "token" not in text and "argon2" not in text
    assert "other's private reply" not in text and "other's post" not in text
    assert "other's private notes" not in text and "other's private answer" not in text
    assert other.email not in text
    # The other user's id only where it is the user's own relation to them (public anyway).
    relations = ("following", "followers", "conversations", "notifications")
    without_relations = orjson.dumps({k: v for k, v in doc.items() if k not in relations}).decode()
    assert other.id not in without_relations
    # The export itself is audited.
    assert "privacy.exported" in await audit_actions(settings, acct.id)


async def test_export_needs_a_token(api):
    status, body, resp = await api.request("GET", "/users/me/export")
    is_problem(status, body, resp, 401)
    status, body, resp = await api.request("GET", "/users/me/export", token="forged")
    is_problem(status, body, resp, 401)
