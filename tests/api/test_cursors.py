"""Tampered cursors on every paginated endpoint: a 4xx (400 naming ``cursor``), never a 5xx.

Hypothesis edits the decoded cursor a real first page returned (values, kinds, keys, whole
random JSON, random bytes, out-of-range timestamps, NaN and infinities, huge integers) and
sends it both as it is (the MAC no longer matches) and signed with the server's own key
(as if the key had leaked), which takes every edit past the MAC into the value checks and
the stores. It runs in a worker thread with a blocking HTTP client, so the app keeps
serving on the test's event loop."""
from __future__ import annotations

import asyncio
import os
import base64
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from kernel.cursors import Cursors
from tests.helpers.api import is_problem
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def ok(api, method, path, account, expected=(200, 201), **kwargs):
    status, body, _ = await api.request(method, path, token=account.token, **kwargs)
    assert status in expected, (method, path, status, body)
    return body


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def first_pages(api) -> tuple[str, dict[str, str]]:
    """A viewer's token and, per paginated endpoint (a path with ``limit=1``), the
    ``next_cursor`` of its first page."""
    me, other, third = await api.register("cu"), await api.register("cuo"), await api.register("cut")
    posts = [(await ok(api, "POST", "/posts", other, json={"body": f"post {i}"}))["id"] for i in range(2)]
    for account in (me, third):
        await ok(api, "PUT", f"/users/{other.id}/follow", account)
    await ok(api, "PUT", f"/users/{third.id}/follow", other)
    await ok(api, "PUT", f"/users/{third.id}/follow", me)
    for post in posts:
        await ok(api, "PUT", f"/posts/{post}/like", me)
        await ok(api, "POST", f"/posts/{posts[0]}/comments", me, json={"body": "a comment"})
    starts = datetime.now(timezone.utc) + timedelta(days=1)
    events = [(await ok(api, "POST", "/events", other, json={"title": f"e{i}", "starts_at": (
        starts + timedelta(minutes=i)).isoformat()}))["id"] for i in range(2)]
    for account in (me, third):
        await ok(api, "PUT", f"/events/{events[0]}/rsvp", account, json={"status": "going"})
    for members in ([other.id], [third.id]):
        conversation = await ok(api, "POST", "/conversations", me, json={"member_ids": members})
        await ok(api, "POST", f"/conversations/{conversation['id']}/messages", other if members == [other.id]
                 else third, json={"body": "hi", "client_id": uuid.uuid4().hex})
    await ok(api, "POST", f"/conversations/{conversation['id']}/messages", me,
             json={"body": "again", "client_id": uuid.uuid4().hex})
    paths = [f"/users/{other.id}/posts", "/posts/popular", f"/posts/{posts[0]}/comments",
             f"/users/{other.id}/followers", f"/users/{me.id}/following", "/feed", "/events",
             f"/events/{events[0]}/attendees", "/conversations", "/notifications", "/notifications?unread=true"]
    cursors = {}
    for path in paths:
        url = f"{path}{'&' if '?' in path else '?'}limit=1"

        async def next_cursor(url=url):
            return (await ok(api, "GET", url, me))["next_cursor"]
        # The feed, the ranking and the notifications are written by event consumers.
        cursors[url] = await eventually(next_cursor, timeout=20)
    # History pages by message id, not by a signed cursor: checked apart.
    messages = f"/conversations/{conversation['id']}/messages?limit=1"
    cursors[messages] = (await ok(api, "GET", messages, me))["next_cursor"]
    assert cursors[messages]
    return me.token, cursors


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def payload_of(cursor: str) -> bytes:
    payload = cursor.partition(".")[0]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


HOSTILE_TIMES = st.sampled_from([
    "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59.999999+00:00", "2026-01-01T00:00:00", "2026-13-01T00:00:00Z", "0000-01-01T00:00:00Z",
])
HOSTILE_SCALARS = st.one_of(
    HOSTILE_TIMES, st.sampled_from(["NaN", "nan", "inf", "-inf", "Infinity", "1e999", "(5", "", "+inf"]),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70), st.sampled_from([2 ** 63, -(2 ** 63) - 1, 10 ** 30]),
    st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(), st.text(max_size=40),
    st.uuids().map(str), st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.from_regex(r"[0-9a-f]{24}", fullmatch=True),
)
JSON = st.recursive(HOSTILE_SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def dumps(value) -> bytes:
    return json.dumps(value).encode()  # orjson refuses integers past 64 bits


@st.composite
def edited_payloads(draw, original: list) -> bytes:
    """The original cursor's JSON with one kind of edit; raw bytes for some."""
    how = draw(st.sampled_from(["value", "drop", "add", "object", "json", "bytes", "nan"]))
    values = list(original)
    if how == "value":
        values[draw(st.integers(0, len(values) - 1))] = draw(JSON)
    elif how == "drop":
        del values[draw(st.integers(0, len(values) - 1))]
    elif how == "add":
        values.insert(draw(st.integers(0, len(values))), draw(JSON))
    elif how == "object":
        return dumps({draw(st.text(max_size=5)): v for v in values})
    elif how == "json":
        return dumps(draw(JSON))
    elif how == "bytes":
        return draw(st.binary(max_size=80))
    else:  # literals orjson never writes, spliced into the original
        literal = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"99999999999999999999999"]))
        index = draw(st.integers(0, len(values) - 1))
        parts = [dumps(v) for v in values]
        parts[index] = literal
        return b"[" + b",".join(parts) + b"]"
    return dumps(values)


def get(base_url: str, token: str, path: str, cursor: str) -> tuple[int, dict | None]:
    url = f"{base_url}/api/v1{path}&cursor={urllib.parse.quote(cursor, safe='')}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers["Content-Type"].startswith("application/problem+json"), exc.headers
        return exc.code, orjson.loads(exc.read())


def check_tampered_cursors(base_url: str, token: str, issued: dict[str, str], key: Cursors, examples: int) -> None:
    paths = sorted(p for p in issued if "/messages?" not in p)

    @hsettings(max_examples=examples, deadline=None, database=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def tampered(data):
        path = data.draw(st.sampled_from(paths))
        original = issued[path]
        payload = data.draw(edited_payloads(orjson.loads(payload_of(original))))
        mac = original.partition(".")[2]
        unsigned = data.draw(st.sampled_from([f"{_b64(payload)}.{mac}", _b64(payload),
                                              f"{_b64(payload)}.{_b64(data.draw(st.binary(max_size=20)))}"]))
        status, body = get(base_url, token, path, unsigned)
        if payload != payload_of(original):
            assert status == 400, (path, unsigned, status, body)
        assert status < 500, (path, unsigned, status, body)
        # Signed with the server's key: the edit reaches the value checks and the stores.
        resigned = f"{_b64(payload)}.{_b64(key._mac(payload))}"
        status, body = get(base_url, token, path, resigned)
        assert status in (200, 400), (path, payload, status, body)
        if status == 400:
            assert [e["field"] for e in body["errors"]] == ["cursor"], body

    tampered()


def check_message_anchors(base_url: str, token: str, messages_path: str, examples: int) -> None:
    """History pages by message id (``before``, or ``cursor`` as every list names it)."""

    @hsettings(max_examples=examples, deadline=None, database=None, derandomize=True)
    @given(name=st.sampled_from(["before", "cursor"]),
           value=st.text(min_size=1, max_size=70) | st.from_regex(r"[0-9a-fA-F]{24}", fullmatch=True))
    def anchors(name, value):
        url = f"{base_url}/api/v1{messages_path}&{name}={urllib.parse.quote(value, safe='')}"
        try:
            with urllib.request.urlopen(urllib.request.Request(
                    url, headers={"Authorization": f"Bearer {token}"}), timeout=30) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status, body = exc.code, orjson.loads(exc.read())
            assert status == 400 and [e["field"] for e in body["errors"]] in (["before"], [name]), body
        assert status in (200, 400), (name, value, status)

    anchors()


async def test_tampered_cursors_of_every_paginated_endpoint_are_4xx_never_5xx(first_pages, server, settings):
    token, issued = first_pages
    base_url = str(server.make_url("")).rstrip("/")
    examples = int(os.environ.get("PULSE_CURSOR_EXAMPLES", "120"))
    await asyncio.to_thread(check_tampered_cursors, base_url, token, issued, Cursors.from_settings(settings),
                            examples)
    messages = next(p for p in issued if p.endswith("/messages?limit=1"))
    await asyncio.to_thread(check_message_anchors, base_url, token, messages, examples // 3)


async def test_the_review_findings_are_400_naming_the_cursor(first_pages, api, settings):
    """The three server errors the review found, sent signed (past the MAC) and unsigned."""
    token, issued = first_pages
    key = Cursors.from_settings(settings)
    a = await api.register("cur")
    post_page = next(p for p in issued if p.startswith("/users/") and p.endswith("/posts?limit=1"))
    feed_page = "/feed?limit=1"
    findings = [
        (post_page, orjson.dumps(["0001-01-01T00:00:00+05:00", str(uuid.uuid4())])),
        (post_page, orjson.dumps(["9999-12-31T23:59:59-05:00", str(uuid.uuid4())])),
        (feed_page, orjson.dumps(["NaN", a.id, str(uuid.uuid4())])),
    ]
    for path, payload in findings:
        for cursor in (f"{_b64(payload)}.{_b64(key._mac(payload))}", _b64(payload)):
            status, body, resp = await api.request("GET", f"{path}&cursor={cursor}", token=token)
            is_problem(status, body, resp, 400)
            assert [e["field"] for e in body["errors"]] == ["cursor"], body


async def test_a_cursor_of_one_instance_pages_on_another(api, start_app):
    """Instances share the key (derived from the audit key they share): a load balancer
    may send the next page anywhere."""
    a = await api.register("cui")
    for i in range(3):
        await ok(api, "POST", "/posts", a, json={"body": f"p{i}"})
    first = await ok(api, "GET", f"/users/{a.id}/posts?limit=2", a)
    async with start_app() as other:
        rest = await ok(other, "GET", f"/users/{a.id}/posts?limit=2&cursor={first['next_cursor']}", a)
    assert [p["body"] for p in first["items"] + rest["items"]] == ["p2", "p1", "p0"]
