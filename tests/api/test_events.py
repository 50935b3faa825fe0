"""Events and RSVPs: CRUD, host-only edits, capacity under concurrency, listing, bad input."""
from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import orjson
import pytest

from tests.helpers.api import is_problem

pytestmark = pytest.mark.asyncio(loop_scope="session")


def at(hours: float, base: datetime | None = None) -> str:
    """An ISO 8601 UTC timestamp ``hours`` from now (or from ``base``)."""
    moment = (base or datetime.now(timezone.utc)) + timedelta(hours=hours)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")



async def create_event(api, token, **fields):
    payload = {"title": "Meetup", "starts_at": at(24)}
    payload.update(fields)
    status, body, _ = await api.request("POST", "/events", token=token, json=payload)
    assert status == 201, body
    return body


async def pg(settings):
    return await asyncpg.connect(settings.postgres_dsn)


async def test_create_and_get_event(api):
    host = await api.register("host")
    starts, ends = at(48), at(50)
    event = await create_event(api, host.token, title="  Board games  ", description="Bring snacks",
                               starts_at=starts, ends_at=ends, location="Library", capacity=10)
    assert event["title"] == "Board games" and event["description"] == "Bring snacks"
    assert event["host"] == {"id": host.id, "username": host.username, "display_name": host.user["display_name"]}
    assert event["starts_at"] == starts and event["ends_at"] == ends
    assert event["location"] == "Library" and event["capacity"] == 10
    assert event["going_count"] == 0 and event["my_rsvp"] is None
    status, got, _ = await api.request("GET", f"/events/{event['id']}", token=host.token)
    assert status == 200 and got == event


async def test_optional_fields_default_to_null_and_capacity_null_is_unlimited(api):
    host = await api.register("host")
    event = await create_event(api, host.token)
    assert event["description"] is None and event["ends_at"] is None and event["location"] is None
    assert event["capacity"] is None
    guests = [await api.register("g") for _ in range(3)]
    for g in guests:
        status, body, _ = await api.request("PUT", f"/events/{event['id']}/rsvp", token=g.token,
                                            json={"status": "going"})
        assert status == 200, body
    assert body["going_count"] == 3


async def test_offset_times_are_stored_in_utc(api):
    host = await api.register("host")
    event = await create_event(api, host.token, starts_at="2031-06-01T12:00:00+02:00")
    assert event["starts_at"] == "2031-06-01T10:00:00.000000Z"


@pytest.mark.parametrize("payload,field", [
    ({"starts_at": "2031-01-01T10:00:00Z"}, "title"),
    ({"title": "x"}, "starts_at"),
    ({"title": "", "starts_at": "2031-01-01T10:00:00Z"}, "title"),
    ({"title": "x" * 201, "starts_at": "2031-01-01T10:00:00Z"}, "title"),
    ({"title": "x", "starts_at": "tomorrow"}, "starts_at"),
    ({"title": "x", "starts_at": "2031-01-01T10:00:00Z", "capacity": 0}, "capacity"),
    ({"title": "x", "starts_at": "2031-01-01T10:00:00Z", "capacity": -3}, "capacity"),
    ({"title": "x", "starts_at": "2031-01-01T10:00:00Z", "capacity": "many"}, "capacity"),
    ({"title": "x", "starts_at": "2031-01-01T10:00:00Z", "ends_at": "2031-01-01T09:59:59Z"}, "ends_at"),
    ({"title": "x", "starts_at": "2031-01-01T10:00:00Z", "host_id": "someone"}, "host_id"),
])
async def test_create_rejects_invalid_fields(api, settings, payload, field):
    host = await api.register("bad")
    status, body, resp = await api.request("POST", "/events", token=host.token, json=payload)
    is_problem(status, body, resp, 400)
    assert field in [e["field"] for e in body["errors"]], body
    conn = await pg(settings)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM events WHERE host_id = $1", uuid.UUID(host.id))
    finally:
        await conn.close()
    assert stored == 0


async def test_events_need_a_token(api):
    status, body, resp = await api.request("POST", "/events", json={"title": "x", "starts_at": at(1)})
    is_problem(status, body, resp, 401)
    status, body, resp = await api.request("GET", "/events")
    is_problem(status, body, resp, 401)


async def test_unknown_or_malformed_event_is_404(api):
    user = await api.register("u")
    for event_id in (str(uuid.uuid4()), "not-a-uuid"):
        for method, path, payload in [("GET", "", None), ("PATCH", "", {"title": "y"}), ("DELETE", "", None),
                                      ("PUT", "/rsvp", {"status": "going"}), ("DELETE", "/rsvp", None),
                                      ("GET", "/attendees", None)]:
            status, body, resp = await api.request(method, f"/events/{event_id}{path}", token=user.token,
                                                   json=payload)
            is_problem(status, body, resp, 404)


async def test_only_the_host_may_edit_or_cancel(api):
    host, other = await api.register("host"), await api.register("other")
    event = await create_event(api, host.token)
    status, body, resp = await api.request("PATCH", f"/events/{event['id']}", token=other.token,
                                           json={"title": "Mine now"})
    is_problem(status, body, resp, 403)
    status, body, resp = await api.request("DELETE", f"/events/{event['id']}", token=other.token)
    is_problem(status, body, resp, 403)
    status, got, _ = await api.request("GET", f"/events/{event['id']}", token=other.token)
    assert status == 200 and got["title"] == "Meetup"


async def test_patch_changes_given_fields_and_clears_nulls(api):
    host = await api.register("host")
    event = await create_event(api, host.token, description="d", location="here", capacity=5, ends_at=at(30))
    status, body, _ = await api.request("PATCH", f"/events/{event['id']}", token=host.token,
                                        json={"title": "Renamed", "location": None, "capacity": None})
    assert status == 200, body
    assert body["title"] == "Renamed" and body["location"] is None and body["capacity"] is None
    assert body["description"] == "d" and body["ends_at"] == event["ends_at"]
    assert body["starts_at"] == event["starts_at"]
    status, body, _ = await api.request("PATCH", f"/events/{event['id']}", token=host.token, json={})
    assert status == 200 and body["title"] == "Renamed"


async def test_patch_checks_times_against_stored_values(api):
    host = await api.register("host")
    starts = datetime.now(timezone.utc) + timedelta(days=3)
    event = await create_event(api, host.token, starts_at=at(0, starts), ends_at=at(2, starts))
    # ends_at alone, before the stored starts_at
    status, body, resp = await api.request("PATCH", f"/events/{event['id']}", token=host.token,
                                           json={"ends_at": at(-1, starts)})
    is_problem(status, body, resp, 400)
    assert body["errors"][0]["field"] == "ends_at"
    # starts_at alone, after the stored ends_at
    status, body, resp = await api.request("PATCH", f"/events/{event['id']}", token=host.token,
                                           json={"starts_at": at(3, starts)})
    is_problem(status, body, resp, 400)
    for field in ("title", "starts_at"):
        status, body, resp = await api.request("PATCH", f"/events/{event['id']}", token=host.token,
                                               json={field: None})
        is_problem(status, body, resp, 400)
    status, body, resp = await api.request("PATCH", f"/events/{event['id']}", token=host.token,
                                           json={"going_count": 99})
    is_problem(status, body, resp, 400)
    status, got, _ = await api.request("GET", f"/events/{event['id']}", token=host.token)
    assert got == event  # nothing changed half-way


async def test_capacity_cannot_drop_below_going(api):
    host = await api.register("host")
    event = await create_event(api, host.token, capacity=5)
    for _ in range(3):
        g = await api.register("g")
        await api.request("PUT", f"/events/{event['id']}/rsvp", token=g.token, json={"status": "going"})
    status, body, resp = await api.request("PATCH", f"/events/{event['id']}", token=host.token,
                                           json={"capacity": 2})
    is_problem(status, body, resp, 409)
    status, body, _ = await api.request("PATCH", f"/events/{event['id']}", token=host.token, json={"capacity": 3})
    assert status == 200 and body["capacity"] == 3 and body["going_count"] == 3


async def test_rsvp_flow_and_my_rsvp(api):
    host, guest = await api.register("host"), await api.register("guest")
    event = await create_event(api, host.token, capacity=2)
    path = f"/events/{event['id']}/rsvp"
    status, body, _ = await api.request("PUT", path, token=guest.token, json={"status": "interested"})
    assert status == 200 and body == {"status": "interested", "going_count": 0}
    status, body, _ = await api.request("PUT", path, token=guest.token, json={"status": "going"})
    assert body == {"status": "going", "going_count": 1}
    # idempotent
    status, body, _ = await api.request("PUT", path, token=guest.token, json={"status": "going"})
    assert status == 200 and body == {"status": "going", "going_count": 1}
    status, got, _ = await api.request("GET", f"/events/{event['id']}", token=guest.token)
    assert got["my_rsvp"] == "going" and got["going_count"] == 1
    status, got, _ = await api.request("GET", f"/events/{event['id']}", token=host.token)
    assert got["my_rsvp"] is None
    status, body, _ = await api.request("PUT", path, token=guest.token, json={"status": "not_going"})
    assert body == {"status": "not_going", "going_count": 0}
    status, _, _ = await api.request("DELETE", path, token=guest.token)
    assert status == 204
    status, _, _ = await api.request("DELETE", path, token=guest.token)
    assert status == 204  # withdrawing twice is harmless
    status, got, _ = await api.request("GET", f"/events/{event['id']}", token=guest.token)
    assert got["my_rsvp"] is None and got["going_count"] == 0


@pytest.mark.parametrize("payload", [{"status": "maybe"}, {"status": None}, {}, {"status": 1}])
async def test_rsvp_rejects_bad_status(api, payload):
    host, guest = await api.register("host"), await api.register("guest")
    event = await create_event(api, host.token)
    status, body, resp = await api.request("PUT", f"/events/{event['id']}/rsvp", token=guest.token, json=payload)
    is_problem(status, body, resp, 400)
    assert body["errors"][0]["field"] == "status"


async def test_full_event_refuses_going_and_withdrawal_frees_a_seat(api):
    host = await api.register("host")
    event = await create_event(api, host.token, capacity=1)
    a, b = await api.register("a"), await api.register("b")
    path = f"/events/{event['id']}/rsvp"
    status, body, _ = await api.request("PUT", path, token=a.token, json={"status": "going"})
    assert status == 200
    status, body, resp = await api.request("PUT", path, token=b.token, json={"status": "going"})
    is_problem(status, body, resp, 409)
    # "interested" does not take a seat
    status, body, _ = await api.request("PUT", path, token=b.token, json={"status": "interested"})
    assert status == 200 and body["going_count"] == 1
    # a status change away from going frees the seat ...
    await api.request("PUT", path, token=a.token, json={"status": "interested"})
    status, body, _ = await api.request("PUT", path, token=b.token, json={"status": "going"})
    assert status == 200 and body["going_count"] == 1
    # ... and so does withdrawing
    await api.request("DELETE", path, token=b.token)
    status, body, _ = await api.request("PUT", path, token=a.token, json={"status": "going"})
    assert status == 200 and body["going_count"] == 1


async def test_fifty_concurrent_rsvps_never_overbook(api, settings):
    host = await api.register("host")
    event = await create_event(api, host.token, capacity=5)
    guests = await asyncio.gather(*(api.register("c") for _ in range(50)))
    results = await asyncio.gather(*(
        api.request("PUT", f"/events/{event['id']}/rsvp", token=g.token, json={"status": "going"}) for g in guests
    ))
    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(200) == 5 and statuses.count(409) == 45, statuses
    status, got, _ = await api.request("GET", f"/events/{event['id']}", token=host.token)
    assert got["going_count"] == 5
    conn = await pg(settings)
    try:
        going = await conn.fetchval("SELECT count(*) FROM rsvps WHERE event_id = $1 AND status = 'going'",
                                    uuid.UUID(event["id"]))
    finally:
        await conn.close()
    assert going == 5


async def test_concurrent_withdraw_and_rejoin_keep_going_count_exact(api, settings):
    host = await api.register("host")
    event = await create_event(api, host.token, capacity=3)
    guests = await asyncio.gather(*(api.register("w") for _ in range(6)))
    path = f"/events/{event['id']}/rsvp"
    for g in guests[:3]:
        await api.request("PUT", path, token=g.token, json={"status": "going"})
    calls = [api.request("DELETE", path, token=g.token) for g in guests[:3]]
    calls += [api.request("PUT", path, token=g.token, json={"status": "going"}) for g in guests[3:]]
    calls += [api.request("PUT", path, token=g.token, json={"status": "going"}) for g in guests[:3]]
    await asyncio.gather(*calls)
    conn = await pg(settings)
    try:
        going = await conn.fetchval("SELECT count(*) FROM rsvps WHERE event_id = $1 AND status = 'going'",
                                    uuid.UUID(event["id"]))
        stored = await conn.fetchval("SELECT going_count FROM events WHERE id = $1", uuid.UUID(event["id"]))
    finally:
        await conn.close()
    assert going == stored <= 3


async def test_attendees_paginate_each_exactly_once(api):
    host = await api.register("host")
    event = await create_event(api, host.token)
    guests = [await api.register("att") for _ in range(7)]
    wanted = {}
    for i, g in enumerate(guests):
        status = ("going", "interested", "not_going")[i % 3]
        await api.request("PUT", f"/events/{event['id']}/rsvp", token=g.token, json={"status": status})
        wanted[g.id] = status
    seen, cursor = [], None
    while True:
        path = f"/events/{event['id']}/attendees?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, body, _ = await api.request("GET", path, token=host.token)
        assert status == 200, body
        assert len(body["items"]) <= 3
        seen += [(item["user"]["id"], item["status"]) for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    assert dict(seen) == wanted
    assert [uid for uid, _ in seen] == [g.id for g in reversed(guests)]  # newest first
    status, body, _ = await api.request("GET", f"/events/{event['id']}/attendees?limit=1", token=host.token)
    assert set(body["items"][0]["user"]) >= {"id", "username", "display_name", "followers_count"}


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "cursor=%%%", "cursor=WzEsMl0"])
async def test_list_queries_reject_bad_values(api, query):
    user = await api.register("q")
    event = await create_event(api, user.token)
    for path in (f"/events/{event['id']}/attendees?{query}", f"/events?{query}"):
        status, body, resp = await api.request("GET", path, token=user.token)
        is_problem(status, body, resp, 400)


async def test_list_upcoming_soonest_first_with_window_and_pages(api):
    host = await api.register("host")
    # A window far in the future that only this test uses.
    base = datetime(2040, 1, 1, tzinfo=timezone.utc) + timedelta(days=uuid.uuid4().int % 10000)
    ids = []
    for hours in (5, 1, 3, 2, 4, 3):
        ids.append((hours, (await create_event(api, host.token, starts_at=at(hours, base)))["id"]))
    await create_event(api, host.token, starts_at=at(-1, base))  # before the window
    await create_event(api, host.token, starts_at=at(10, base))  # after it
    window = f"from={at(0, base)}&to={at(6, base)}".replace("+", "%2B")
    seen, cursor = [], None
    while True:
        status, body, _ = await api.request(
            "GET", f"/events?{window}&limit=2" + (f"&cursor={cursor}" if cursor else ""), token=host.token)
        assert status == 200, body
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 6 and len({e["id"] for e in seen}) == 6
    assert {e["id"] for e in seen} == {i for _, i in ids}
    starts = [e["starts_at"] for e in seen]
    assert starts == sorted(starts)


async def test_list_defaults_to_upcoming(api):
    host = await api.register("host")
    past = await create_event(api, host.token, starts_at=at(-2))
    soon = await create_event(api, host.token, starts_at=at(0.01))
    status, body, _ = await api.request("GET", f"/events?to={at(0.02)}&limit=100", token=host.token)
    assert status == 200
    ids = [e["id"] for e in body["items"]]
    assert soon["id"] in ids and past["id"] not in ids
    status, body, resp = await api.request("GET", f"/events?from={at(5)}&to={at(1)}", token=host.token)
    is_problem(status, body, resp, 400)
    status, body, resp = await api.request("GET", "/events?from=yesterday", token=host.token)
    is_problem(status, body, resp, 400)


async def test_cancel_deletes_and_emits_event_cancelled(api, settings):
    host, a, b, c = [await api.register(p) for p in ("host", "a", "b", "c")]
    event = await create_event(api, host.token, title="Picnic")
    for acct, status in ((a, "going"), (b, "interested"), (c, "not_going")):
        await api.request("PUT", f"/events/{event['id']}/rsvp", token=acct.token, json={"status": status})
    status, _, _ = await api.request("DELETE", f"/events/{event['id']}", token=host.token)
    assert status == 204
    status, body, resp = await api.request("GET", f"/events/{event['id']}", token=a.token)
    is_problem(status, body, resp, 404)
    conn = await pg(settings)
    try:
        rows = await conn.fetch("SELECT payload::text AS payload FROM outbox WHERE event_type = 'event.cancelled' "
                                "AND payload->>'event_id' = $1", event["id"])
        rsvps = await conn.fetchval("SELECT count(*) FROM rsvps WHERE event_id = $1", uuid.UUID(event["id"]))
        rsvp_events = await conn.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'event.rsvp' "
                                          "AND payload->>'event_id' = $1", event["id"])
    finally:
        await conn.close()
    assert len(rows) == 1 and rsvps == 0 and rsvp_events == 3
    payload = orjson.loads(rows[0]["payload"])
    assert payload["host_id"] == host.id and payload["title"] == "Picnic"
    assert sorted(payload["attendee_ids"]) == sorted([a.id, b.id])


async def test_events_of_users_pending_erasure_are_hidden(api, settings):
    host, viewer = await api.register("gone"), await api.register("viewer")
    event = await create_event(api, host.token, starts_at=at(1))
    conn = await pg(settings)
    try:
        await conn.execute("UPDATE users SET status = 'pending_erasure' WHERE id = $1", uuid.UUID(host.id))
    finally:
        await conn.close()
    status, body, resp = await api.request("GET", f"/events/{event['id']}", token=viewer.token)
    is_problem(status, body, resp, 404)
    status, body, resp = await api.request("PUT", f"/events/{event['id']}/rsvp", token=viewer.token,
                                           json={"status": "going"})
    is_problem(status, body, resp, 404)
    status, body, _ = await api.request("GET", f"/events?to={at(2)}&limit=100", token=viewer.token)
    assert event["id"] not in [e["id"] for e in body["items"]]
