"""The purge saga: no trace left in any store, audit kept pseudonymised, steps retried
after a failure or a crash, stuck sagas reported; retention; the `pulse purge` command."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import orjson
import pytest
import redis.asyncio as aioredis

from kernel.timefmt import iso, utcnow
from server import appkeys
from server.bus.types import DomainEvent
from server.services.privacy import FINAL_STEP, ErasureStep
from tests.helpers.waiting import eventually
from tests.privacy_helpers import mongo_traces, pg, pg_traces, privacy_of, redis_traces, subject

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def request_erasure(api, acct) -> None:
    status, body, _ = await api.request("DELETE", "/users/me", token=acct.token, json={"password": acct.password})
    assert status == 202, body


async def make_due(settings, *user_ids: str) -> None:
    """The recovery window is over (as with erasure_recovery_days=0)."""
    conn = await pg(settings)
    try:
        await conn.execute("UPDATE users SET purge_after = now() - interval '1 second' WHERE id = ANY($1::uuid[])",
                           [uuid.UUID(u) for u in user_ids])
    finally:
        await conn.close()


async def wait_published(settings, acct) -> None:
    """The relay has delivered every event naming the user (what the purge's outbox step
    removes; events still in flight are left to it)."""
    async def delivered() -> bool:
        conn = await pg(settings)
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL AND (strpos(payload::text, $1) > 0 "
                "OR strpos(lower(payload::text), lower($2)) > 0)", acct.id, acct.username) == 0
        finally:
            await conn.close()

    await eventually(delivered)


async def saga_of(settings, user_id: str):
    conn = await pg(settings)
    try:
        saga = await conn.fetchrow("SELECT id, status FROM erasure_sagas WHERE subject = $1",
                                   subject(settings, user_id))
        steps = await conn.fetch("SELECT step, status, attempts, last_error FROM erasure_steps WHERE saga_id = $1 "
                                 "ORDER BY position", saga["id"]) if saga else []
    finally:
        await conn.close()
    return saga, {r["step"]: r for r in steps}


async def test_purge_leaves_no_trace_in_any_store_and_keeps_the_audit(api, server, settings):
    acct, other = await api.register("pur"), await api.register("pwo")
    status, own_post, _ = await api.request("POST", "/posts", token=acct.token, json={"body": f"by {acct.username}"})
    assert status == 201
    status, their_post, _ = await api.request("POST", "/posts", token=other.token, json={"body": "a post"})
    assert status == 201
    await api.request("PUT", f"/posts/{their_post['id']}/like", token=acct.token)
    await api.request("POST", f"/posts/{their_post['id']}/comments", token=acct.token,
                      json={"body": f"signed {acct.email}"})
    await api.request("PUT", f"/posts/{own_post['id']}/like", token=other.token)
    await api.request("GET", "/posts/popular", token=other.token)
    assert (await api.request("PUT", f"/users/{acct.id}/follow", token=other.token))[0] == 200
    assert (await api.request("PUT", f"/users/{other.id}/follow", token=acct.token))[0] == 200
    # (The title reaches the attendees in their cancellation notice: their record, which
    # keeps no link to the host.)
    status, party, _ = await api.request("POST", "/events", token=acct.token, json={
        "title": "Rooftop party", "starts_at": "2030-01-01T20:00:00Z"})
    assert status == 201
    assert (await api.request("PUT", f"/events/{party['id']}/rsvp", token=other.token, json={"status": "going"}))[0] == 200
    status, meetup, _ = await api.request("POST", "/events", token=other.token, json={
        "title": "meetup", "starts_at": "2030-01-02T20:00:00Z"})
    assert (await api.request("PUT", f"/events/{meetup['id']}/rsvp", token=acct.token, json={"status": "going"}))[0] == 200

    async def in_feed() -> bool:
        status, feed, _ = await api.request("GET", "/feed", token=other.token)
        return status == 200 and own_post["id"] in {p["id"] for p in feed["items"]}

    await eventually(in_feed)
    third = await api.register("pw3")
    status, direct, _ = await api.request("POST", "/conversations", token=acct.token, json={"member_ids": [other.id]})
    assert status == 201
    status, group, _ = await api.request("POST", "/conversations", token=other.token,
                                         json={"member_ids": [acct.id, third.id], "title": "trio"})
    assert status == 201
    for conv, sender, body in ((direct, other, "hi"), (direct, acct, f"hi, {acct.username} here"),
                               (group, acct, "hello all"), (group, third, "hey")):
        status, _, _ = await api.request("POST", f"/conversations/{conv['id']}/messages", token=sender.token,
                                         json={"body": body, "client_id": uuid.uuid4().hex})
        assert status == 201
    status, _, _ = await api.request("POST", f"/conversations/{direct['id']}/read", token=acct.token,
                                     json={"message_id": (await api.request(
                                         "GET", f"/conversations/{direct['id']}/messages", token=acct.token))[1]["items"][0]["id"]})
    assert status == 200

    async def notified() -> bool:
        _, mine, _ = await api.request("GET", "/notifications", token=acct.token)
        _, theirs, _ = await api.request("GET", "/notifications", token=other.token)
        about = [n for n in theirs["items"] if n["metadata"].get("actor_id") == acct.id]
        return any(n["type"] == "welcome" for n in mine["items"]) and {"like", "comment", "follow"} <= {
            n["type"] for n in about}

    await eventually(notified)
    await api.request("POST", "/auth/login", json={"login": acct.username, "password": "wrong guess"})
    await api.request("PATCH", "/users/me", token=acct.token, json={"bio": "to be forgotten"})
    await api.request("GET", f"/users/{acct.username}", token=other.token)  # profile cache
    status, _, _ = await api.request("GET", "/users/me/export", token=acct.token)
    assert status == 200
    # A key another context could hold about the user (presence, offsets ...).
    r = aioredis.from_url(settings.redis_url)
    await r.set(f"{settings.namespace}:presence:{acct.id}", "x")
    # Seen online by an instance that died without cleaning up.
    await r.sadd(f"{settings.namespace}:rt:presence:users:ghost-instance", acct.id, other.id)
    await r.aclose()
    # An event about the user in someone else's replay log (and one in their own).
    pusher = server.app[appkeys.PUSHER]
    await pusher.push([other.id], "notification:new", {"notification": {"metadata": {"actor_id": acct.id}}})
    await pusher.push([other.id], "notification:new", {"notification": {"metadata": {"actor_id": other.id}}})
    await pusher.push([acct.id], "notification:new", {"notification": {"type": "welcome"}})
    await request_erasure(api, acct)
    await make_due(settings, acct.id)
    await wait_published(settings, acct)

    report = await privacy_of(server).run_due_purges(wait_for_lock=10)
    saga, steps = await saga_of(settings, acct.id)
    assert saga is not None and str(saga["id"]) in report.completed and saga["status"] == "completed"
    assert all(s["status"] == "done" for s in steps.values()) and FINAL_STEP in steps

    needles = [acct.id, acct.email, acct.username]
    # Nothing names the user, delivered or not, but the purge's own user.purged, which
    # leaves the outbox as soon as the relay delivered it (not after the retention).
    await wait_published(settings, acct)
    assert await pg_traces(settings, needles) == {}
    assert await redis_traces(settings, needles) == []
    r = aioredis.from_url(settings.redis_url)
    try:
        others_log = await r.xrange(f"{settings.namespace}:rt:log:{other.id}")
        assert any(other.id.encode() in f.get(b"d", b"") for _, f in others_log)  # the rest of their log stays
        assert await r.sismember(f"{settings.namespace}:rt:presence:users:ghost-instance", other.id)
    finally:
        await r.aclose()

    # The audit trail survives, pseudonymised: the whole story under the keyed hash.
    conn = await pg(settings)
    try:
        actions = [r["action"] for r in await conn.fetch(
            "SELECT action FROM audit_log WHERE subject = $1 ORDER BY id", subject(settings, acct.id))]
    finally:
        await conn.close()
    assert actions[0] == "user.registered"
    for action in ("privacy.exported", "erasure.requested", "erasure.purge_started", "erasure.step_done",
                   "erasure.purged"):
        assert action in actions
    # The other users keep their side: their messages, the conversations without the user.
    status, me, _ = await api.request("GET", "/users/me", token=other.token)
    assert status == 200 and me["id"] == other.id
    status, conv, _ = await api.request("GET", f"/conversations/{direct['id']}", token=other.token)
    assert status == 200 and conv["member_ids"] == [other.id] and conv["last_message"]["body"] == "hi"
    status, history, _ = await api.request("GET", f"/conversations/{direct['id']}/messages", token=other.token)
    assert [m["body"] for m in history["items"]] == ["hi"]
    status, conv, _ = await api.request("GET", f"/conversations/{group['id']}", token=third.token)
    assert sorted(conv["member_ids"]) == sorted([other.id, third.id]) and conv["last_message"]["body"] == "hey"
    # Attendees heard of the cancelled event, anonymously; nothing else about the user.
    async def cancelled_notice():
        _, notes, _ = await api.request("GET", "/notifications", token=other.token)
        return [n for n in notes["items"] if n["type"] == "event_cancelled"]

    notice = (await eventually(cancelled_notice))[0]
    assert notice["message"] == "Rooftop party was cancelled" and "actor_id" not in notice["metadata"]
    assert await mongo_traces(settings, needles) == {}


async def test_purge_keeps_counters_on_other_users_exact(api, server, settings):
    leaving, staying, third = await api.register("pcx"), await api.register("pcs"), await api.register("pct")
    status, kept, _ = await api.request("POST", "/posts", token=staying.token, json={"body": "stays"})
    assert status == 201
    status, gone, _ = await api.request("POST", "/posts", token=leaving.token, json={"body": "goes"})
    assert status == 201
    for who in (leaving, third):
        assert (await api.request("PUT", f"/posts/{kept['id']}/like", token=who.token))[0] == 200
        assert (await api.request("POST", f"/posts/{kept['id']}/comments", token=who.token,
                                  json={"body": f"from {who.username}"}))[0] == 201
    assert (await api.request("PUT", f"/posts/{gone['id']}/like", token=staying.token))[0] == 200
    assert (await api.request("POST", f"/posts/{gone['id']}/comments", token=staying.token,
                              json={"body": "on a post that goes"}))[0] == 201
    status, before, _ = await api.request("GET", f"/posts/{kept['id']}", token=staying.token)
    assert (before["like_count"], before["comment_count"]) == (2, 2)
    for a, b in ((leaving, staying), (staying, leaving), (third, staying), (leaving, third)):
        assert (await api.request("PUT", f"/users/{b.id}/follow", token=a.token))[0] == 200
    status, meetup, _ = await api.request("POST", "/events", token=staying.token, json={
        "title": "meetup", "starts_at": "2030-03-01T20:00:00Z", "capacity": 5})
    assert status == 201
    for who in (leaving, third):
        assert (await api.request("PUT", f"/events/{meetup['id']}/rsvp", token=who.token,
                                  json={"status": "going"}))[0] == 200
    status, party, _ = await api.request("POST", "/events", token=leaving.token, json={
        "title": "party", "starts_at": "2030-03-02T20:00:00Z"})
    assert status == 201
    for who, rsvp in ((staying, "going"), (third, "interested")):
        assert (await api.request("PUT", f"/events/{party['id']}/rsvp", token=who.token, json={"status": rsvp}))[0] == 200
    status, profile, _ = await api.request("GET", f"/users/{staying.id}", token=third.token)
    assert (profile["followers_count"], profile["following_count"]) == (2, 1)

    await request_erasure(api, leaving)
    await make_due(settings, leaving.id)
    outcome = await privacy_of(server).purge_user(uuid.UUID(leaving.id))
    assert outcome.status == "completed"

    status, after, _ = await api.request("GET", f"/posts/{kept['id']}", token=staying.token)
    assert (after["like_count"], after["comment_count"]) == (1, 1)
    status, comments, _ = await api.request("GET", f"/posts/{kept['id']}/comments", token=staying.token)
    assert [c["body"] for c in comments["items"]] == [f"from {third.username}"]
    assert (await api.request("GET", f"/posts/{gone['id']}", token=staying.token))[0] == 404
    status, profile, _ = await api.request("GET", f"/users/{staying.id}", token=third.token)
    assert (profile["followers_count"], profile["following_count"]) == (1, 0)
    status, profile, _ = await api.request("GET", f"/users/{third.id}", token=staying.token)
    assert (profile["followers_count"], profile["following_count"]) == (0, 1)
    status, event, _ = await api.request("GET", f"/events/{meetup['id']}", token=third.token)
    assert event["going_count"] == 1
    assert (await api.request("GET", f"/events/{party['id']}", token=third.token))[0] == 404
    conn = await pg(settings)
    try:
        exact = await conn.fetchval(
            "SELECT bool_and(like_count = (SELECT count(*) FROM likes l WHERE l.post_id = p.id) AND "
            "comment_count = (SELECT count(*) FROM comments c WHERE c.post_id = p.id)) FROM posts p "
            "WHERE author_id = ANY($1::uuid[])", [uuid.UUID(staying.id), uuid.UUID(third.id)])
    finally:
        await conn.close()
    assert exact
    try:
        conn = await pg(settings)
        cancelled = await conn.fetchrow("SELECT payload FROM outbox WHERE event_type = 'event.cancelled' "
                                        "AND payload->>'event_id' = $1", party["id"])
        profiles_exact = await conn.fetchval(
            "SELECT bool_and(followers_count = (SELECT count(*) FROM follows WHERE followee_id = p.user_id) AND "
            "following_count = (SELECT count(*) FROM follows WHERE follower_id = p.user_id)) FROM profiles p "
            "WHERE user_id = ANY($1::uuid[])", [uuid.UUID(staying.id), uuid.UUID(third.id)])
    finally:
        await conn.close()
    assert sorted(cancelled["payload"]["attendee_ids"]) == sorted([staying.id, third.id])
    assert profiles_exact
    # A rerun of the steps (idempotence) changes nothing.
    for step in privacy_of(server).steps:
        await step.run(uuid.UUID(leaving.id))
    status, again, _ = await api.request("GET", f"/posts/{kept['id']}", token=staying.token)
    assert (again["like_count"], again["comment_count"]) == (1, 1)
    status, profile, _ = await api.request("GET", f"/users/{staying.id}", token=third.token)
    assert (profile["followers_count"], profile["following_count"]) == (1, 0)
    assert (await api.request("GET", f"/events/{meetup['id']}", token=third.token))[1]["going_count"] == 1


async def test_users_not_due_or_restored_are_not_purged(api, server, settings):
    waiting, restored = await api.register("pnd"), await api.register("prs")
    await request_erasure(api, waiting)
    await request_erasure(api, restored)
    status, _, _ = await api.request("POST", "/auth/restore", json={"login": restored.email, "password": restored.password})
    assert status == 200
    privacy = privacy_of(server)
    assert await privacy.purge_user(uuid.UUID(waiting.id)) is None
    assert await privacy.purge_user(uuid.UUID(restored.id)) is None
    conn = await pg(settings)
    try:
        count = await conn.fetchval("SELECT count(*) FROM users WHERE id = ANY($1::uuid[])",
                                    [uuid.UUID(waiting.id), uuid.UUID(restored.id)])
    finally:
        await conn.close()
    assert count == 2


async def test_a_failed_step_is_recorded_and_retried_on_the_next_run(api, server, settings):
    acct = await api.register("pfl")
    await request_erasure(api, acct)
    await make_due(settings, acct.id)
    await wait_published(settings, acct)
    privacy = privacy_of(server)
    calls = []

    async def flaky(uid):
        calls.append(uid)
        if len(calls) == 1:
            raise ConnectionError("store went away")

    original = privacy.steps
    privacy.steps = [original[0], ErasureStep("test.flaky", flaky), *original[1:]]
    try:
        first = await privacy.purge_user(uuid.UUID(acct.id))
        assert first.status == "running" and first.failed_step == "test.flaky"
        saga, steps = await saga_of(settings, acct.id)
        assert saga["status"] == "running"
        assert steps[original[0].name]["status"] == "done"
        assert steps["test.flaky"]["status"] == "failed" and steps["test.flaky"]["attempts"] == 1
        assert "store went away" in steps["test.flaky"]["last_error"]
        assert steps[FINAL_STEP]["status"] == "pending"
        # Hidden and locked meanwhile: no login, no restore (a purge is under way).
        for path in ("/auth/login", "/auth/restore"):
            status, _, _ = await api.request("POST", path, json={"login": acct.email, "password": acct.password})
            assert status == 401

        report = await privacy.run_due_purges(wait_for_lock=10)
        assert str(saga["id"]) in report.completed
    finally:
        privacy.steps = original
    saga, steps = await saga_of(settings, acct.id)
    assert saga["status"] == "completed" and len(calls) == 2
    assert all(s["status"] == "done" and s["last_error"] is None for s in steps.values())
    assert steps[original[0].name]["attempts"] == 1  # done steps are not run again
    assert await pg_traces(settings, [acct.email, acct.username]) == {}


async def test_a_purge_killed_between_steps_completes_on_the_next_run(api, server, settings):
    acct = await api.register("pkl")
    await request_erasure(api, acct)
    await make_due(settings, acct.id)
    privacy = privacy_of(server)

    async def killed(uid):
        raise asyncio.CancelledError()  # the process dies here: nothing is recorded

    original = privacy.steps
    privacy.steps = [original[0], ErasureStep("test.killed", killed), *original[1:]]
    try:
        with pytest.raises(asyncio.CancelledError):
            await privacy.purge_user(uuid.UUID(acct.id))
        saga, steps = await saga_of(settings, acct.id)
        assert saga["status"] == "running" and steps["test.killed"]["status"] == "pending"
        assert steps[original[0].name]["status"] == "done"
    finally:
        privacy.steps = original
    # Next run, after a deploy without the step: the saga resumes where it was.
    report = await privacy.run_due_purges(wait_for_lock=10)
    assert str(saga["id"]) in report.completed
    conn = await pg(settings)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users WHERE id = $1", uuid.UUID(acct.id)) == 0
    finally:
        await conn.close()


async def test_a_saga_that_cannot_finish_is_reported_and_keeps_the_account_hidden(api, server, settings):
    acct = await api.register("pst")
    await request_erasure(api, acct)
    await make_due(settings, acct.id)
    privacy = privacy_of(server)

    async def broken(uid):
        raise RuntimeError("schema mismatch")

    original_steps, original_settings = privacy.steps, privacy.settings
    privacy.steps = [*original_steps, ErasureStep("test.broken", broken)]
    privacy.settings = original_settings.replace(purge_max_attempts=2)
    try:
        assert (await privacy.purge_user(uuid.UUID(acct.id))).status == "running"
        outcome = await privacy.purge_user(uuid.UUID(acct.id))
        assert outcome.status == "stuck" and outcome.failed_step == "test.broken"
        unfinished = await privacy.unfinished_sagas()
        mine = [s for s in unfinished if s["saga_id"] == outcome.saga_id]
        assert mine and mine[0]["status"] == "stuck"
        broken_state = next(s for s in mine[0]["steps"] if s["step"] == "test.broken")
        assert (broken_state["status"], broken_state["attempts"]) == ("failed", 2)
        assert "schema mismatch" in broken_state["last_error"]
        conn = await pg(settings)
        try:
            actions = [r["action"] for r in await conn.fetch(
                "SELECT action FROM audit_log WHERE subject = $1", subject(settings, acct.id))]
            status = await conn.fetchval("SELECT status FROM users WHERE id = $1", uuid.UUID(acct.id))
        finally:
            await conn.close()
        assert "erasure.stuck" in actions and actions.count("erasure.step_failed") == 2
        assert status == "pending_erasure"
    finally:
        privacy.steps, privacy.settings = original_steps, original_settings
    # Fixed (the step gone): a stuck saga is still retried and finishes.
    assert (await privacy.purge_user(uuid.UUID(acct.id))).status == "completed"


async def test_retention_prunes_expired_sessions(api, server, settings):
    acct = await api.register("ret")
    conn = await pg(settings)
    try:
        await conn.execute("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE user_id = $1",
                           uuid.UUID(acct.id))
        counts = await privacy_of(server).prune()
        assert counts["sessions"] >= 1
        assert await conn.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", uuid.UUID(acct.id)) == 0
    finally:
        await conn.close()


def cli_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({
        "PULSE_POSTGRES_DSN": settings.postgres_dsn, "PULSE_REDIS_URL": settings.redis_url,
        "PULSE_MONGO_URL": settings.mongo_url, "PULSE_AMQP_URL": settings.amqp_url,
        "PULSE_MONGO_DB": settings.mongo_db, "PULSE_NAMESPACE": settings.namespace,
        "PULSE_AUDIT_KEY": settings.audit_key, "PULSE_LOG_LEVEL": "WARNING",
    })
    return env


async def test_pulse_purge_now_purges_one_user_and_refuses_unknown_ones(api, settings):
    acct, bystander = await api.register("pcl"), await api.register("pcb")
    await request_erasure(api, bystander)  # not due: left alone by --now of another user

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "server.cli", "purge", *args], env=cli_env(settings),
                              capture_output=True, text=True, timeout=120)

    proc = await asyncio.to_thread(run, "--now", acct.id)  # an active account, purged at once
    assert proc.returncode == 0, proc.stderr
    assert '"status": "completed"' in proc.stdout
    for bad in ("not-a-uuid", str(uuid.uuid4())):
        proc = await asyncio.to_thread(run, "--now", bad)
        assert proc.returncode == 2 and "no user" in proc.stderr
    proc = await asyncio.to_thread(run)
    assert proc.returncode in (0, 1), proc.stderr  # 1 only if another test left a saga open
    conn = await pg(settings)
    try:
        gone = await conn.fetchval("SELECT count(*) FROM users WHERE id = $1", uuid.UUID(acct.id))
        kept = await conn.fetchval("SELECT status FROM users WHERE id = $1", uuid.UUID(bystander.id))
        actions = [r["action"] for r in await conn.fetch(
            "SELECT action FROM audit_log WHERE subject = $1 ORDER BY id", subject(settings, acct.id))]
    finally:
        await conn.close()
    assert gone == 0 and kept == "pending_erasure"
    assert actions.index("erasure.requested") < actions.index("erasure.purged")
    status, _, _ = await api.request("GET", "/users/me", token=acct.token)
    assert status == 401


async def entries_of(server, user_id: str) -> list[tuple[str, str, dict]]:
    """The user's replay log as a client replaying it from the start gets it."""
    entries = await server.app[appkeys.PUSHER].offset_log.read_after(user_id, "0-0")
    return [(e.offset, e.event, orjson.loads(e.data_json)) for e in entries]


async def send(api, acct, conversation_id: str, body: str) -> dict:
    status, message, _ = await api.request("POST", f"/conversations/{conversation_id}/messages", token=acct.token,
                                           json={"body": body, "client_id": uuid.uuid4().hex})
    assert status == 201, message
    return message


async def test_purging_users_named_like_events_erases_them_by_id_and_leaves_others_logs_replayable(
        api, server, settings):
    """Users named ``message`` and ``notification`` (words in every replay-log entry and
    event name): only what names them by id goes; the others' message:new entries stay
    with their offsets, and a client resuming from an old offset replays."""
    erased = [await api.register("pnm", username="message"), await api.register("pnn", username="notification")]
    message_user, notification_user = erased
    a, b = await api.register("pna"), await api.register("pnb")
    status, group, _ = await api.request("POST", "/conversations", token=a.token,
                                         json={"member_ids": [b.id, message_user.id], "title": "message"})
    assert status == 201
    status, direct, _ = await api.request("POST", "/conversations", token=a.token,
                                          json={"member_ids": [notification_user.id]})
    assert status == 201
    first = await send(api, a, group["id"], "first message")
    by_message_user = await send(api, message_user, group["id"], "message from message")
    from_b = await send(api, b, group["id"], "message:new for message, notification:new")
    assert (await api.request("POST", f"/conversations/{group['id']}/read", token=message_user.token,
                              json={"message_id": from_b["id"]}))[0] == 200
    to_n = await send(api, a, direct["id"], "hello notification")
    by_notification_user = await send(api, notification_user, direct["id"], "hi, notification here")
    # Notifications about them, pushed to a (follows go through the bus).
    for user in erased:
        assert (await api.request("PUT", f"/users/{a.id}/follow", token=user.token))[0] == 200

    async def notified():
        # (Both follows are one grouped notification, pushed coalesced: API.md v1.1.)
        got = [d for _, e, d in await entries_of(server, a.id) if e == "notification:new"]
        return {actor for d in got if d["notification"]["type"] == "follow"
                for actor in [d["notification"]["metadata"].get("actor_id"), *d["notification"].get("actor_ids", [])]
                } >= {u.id for u in erased}

    await eventually(notified)
    before = {u.id: await entries_of(server, u.id) for u in (a, b)}
    erased_ids = {u.id for u in erased}

    def about_erased(data: dict) -> bool:
        message = data.get("message") or {}
        notification = data.get("notification") or {}
        return (message.get("sender_id") in erased_ids or data.get("user_id") in erased_ids
                or (notification.get("metadata") or {}).get("actor_id") in erased_ids
                or bool(erased_ids & set(notification.get("actor_ids") or ())))

    assert sum(about_erased(d) for _, _, d in before[a.id]) >= 5  # messages, read receipt, notifications
    for user in erased:
        outcome = await privacy_of(server).purge_now(user.id)
        assert outcome.status == "completed", outcome

    for reader in (a, b):
        after = await entries_of(server, reader.id)
        # Exactly the entries about the erased users are gone; the rest unchanged, same offsets.
        assert after == [entry for entry in before[reader.id] if not about_erased(entry[2])]
        assert any(e == "message:new" for _, e, _ in after)
    assert [d["message"]["id"] for _, e, d in await entries_of(server, a.id) if e == "message:new"] == [
        first["id"], from_b["id"], to_n["id"]]
    # Resuming from any offset a's client saw (those of redacted entries too) replays.
    offset_log = server.app[appkeys.PUSHER].offset_log
    for offset, event, data in before[a.id]:
        replay = await offset_log.read_after(a.id, offset)
        assert replay is not None, (event, data)
        assert [e.offset for e in replay] == [o for o, _, d in before[a.id]
                                             if tuple(map(int, o.split("-"))) > tuple(map(int, offset.split("-")))
                                             and not about_erased(d)]
    assert by_message_user["id"] not in str(await entries_of(server, b.id))
    assert by_notification_user["id"] not in str(await entries_of(server, a.id))

    # No store names them by id or email (their usernames are words everybody uses).
    await wait_published(settings, message_user)
    await wait_published(settings, notification_user)
    for user in erased:
        needles = [user.id, user.email]
        assert await pg_traces(settings, needles) == {}
        assert await mongo_traces(settings, needles) == {}
        assert await redis_traces(settings, needles) == []
    # The others keep their conversation, their messages and its title.
    status, history, _ = await api.request("GET", f"/conversations/{group['id']}/messages", token=b.token)
    assert status == 200 and [m["id"] for m in history["items"]] == [from_b["id"], first["id"]]
    status, conv, _ = await api.request("GET", f"/conversations/{group['id']}", token=b.token)
    assert conv["title"] == "message" and sorted(conv["member_ids"]) == sorted([a.id, b.id])


async def test_events_in_flight_after_a_purge_recreate_nothing(api, server, settings):
    """Events produced before the purge and handled after it (a slow consumer, a
    redelivery): the consumers write nothing about or for the purged user."""
    consumers = server.app[appkeys.EVENT_BUS].consumers  # every consumer of the app
    gone, other = await api.register("pif"), await api.register("pio")
    status, post, _ = await api.request("POST", "/posts", token=other.token, json={"body": "theirs"})
    assert status == 201
    assert (await api.request("PUT", f"/users/{other.id}/follow", token=gone.token))[0] == 200
    await wait_published(settings, gone)
    outcome = await privacy_of(server).purge_now(gone.id)
    assert outcome.status == "completed"
    await wait_published(settings, gone)
    other_log = await entries_of(server, other.id)

    def event(type_: str, **payload) -> DomainEvent:
        return DomainEvent(id=str(uuid.uuid4()), type=type_, payload=payload, created_at=iso(utcnow()))

    in_flight = [
        event("user.registered", user_id=gone.id, username=gone.username, display_name="Gone"),
        event("post.created", post_id=str(uuid.uuid4()), author_id=gone.id, created_at=iso(utcnow())),
        event("post.created", post_id=post["id"], author_id=gone.id, created_at=iso(utcnow())),
        event("post.liked", post_id=post["id"], post_author_id=other.id, actor_id=gone.id),
        event("comment.created", comment_id=str(uuid.uuid4()), post_id=post["id"], post_author_id=other.id,
              actor_id=gone.id),
        event("post.liked", post_id=str(uuid.uuid4()), post_author_id=gone.id, actor_id=other.id),
        event("user.followed", follower_id=gone.id, followee_id=other.id),
        event("user.followed", follower_id=other.id, followee_id=gone.id),
        event("event.rsvp", event_id=str(uuid.uuid4()), host_id=gone.id, actor_id=other.id, status="going"),
        event("event.cancelled", event_id=str(uuid.uuid4()), host_id=other.id, title="x",
              attendee_ids=[gone.id]),
    ]
    for consumer in consumers:
        for e in in_flight:
            if e.type in consumer.event_types:
                await consumer.handle(e)
    needles = [gone.id, gone.email, gone.username]
    assert await mongo_traces(settings, needles) == {}
    assert await redis_traces(settings, needles) == []
    assert await entries_of(server, other.id) == other_log  # nothing pushed about them
