"""Cursors: signed by the server, values checked by kind and range on the way back in."""
from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timezone
from uuid import UUID, uuid4

import orjson
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from kernel.cursors import INT64_MAX, Cursors, Score
from kernel.errors import ValidationFailed
from kernel.settings import Settings

CURSORS = Cursors(b"k" * 32)


def signed(payload: bytes, cursors: Cursors = CURSORS) -> str:
    """A cursor with this exact payload, signed with the key: what a client holding the
    key could send, so the value checks are exercised past the MAC."""
    b64 = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    mac = base64.urlsafe_b64encode(cursors._mac(payload)).decode().rstrip("=")
    return f"{b64}.{mac}"


def rejected(cursor: str, *kinds: type) -> None:
    with pytest.raises(ValidationFailed) as caught:
        CURSORS.decode(cursor, *kinds)
    assert [e.field for e in caught.value.errors] == ["cursor"]


def test_round_trip_of_every_kind():
    moment, uid = datetime(2026, 12, 1, 18, 0, 0, 123456, tzinfo=timezone.utc), uuid4()
    cursor = CURSORS.encode(moment, uid, 42, 1.5, Score("1764612000.123456"), "x")
    assert CURSORS.decode(cursor, datetime, UUID, int, float, Score, str) == (
        moment, uid, 42, 1.5, "1764612000.123456", "x")
    assert CURSORS.decode(None, datetime) is None


def test_timestamps_come_back_in_utc():
    cursor = CURSORS.encode(datetime.fromisoformat("2026-01-01T05:00:00+05:00"))
    (moment,) = CURSORS.decode(cursor, datetime)
    assert moment.utcoffset().total_seconds() == 0 and moment.hour == 0


def test_a_cursor_of_another_key_or_edited_is_rejected():
    cursor = CURSORS.encode(datetime.now(timezone.utc), uuid4())
    rejected(Cursors(b"other key, 16+ bytes").encode(datetime.now(timezone.utc), uuid4()), datetime, UUID)
    payload, _, mac = cursor.partition(".")
    rejected(payload, datetime, UUID)  # no MAC
    rejected(f"{payload}.{mac[:-1]}A" if mac[-1] != "A" else f"{payload}.{mac[:-1]}B", datetime, UUID)
    edited = base64.urlsafe_b64encode(orjson.dumps(["2026-01-01T00:00:00+00:00", str(uuid4())])).decode()
    rejected(f"{edited.rstrip('=')}.{mac}", datetime, UUID)
    for junk in ("", ".", "garbage", "!!!", "a.b.c", "\x00", "Zm9v.Zm9v", "=" * 8):
        rejected(junk, datetime, UUID)


@pytest.mark.parametrize("payload,kinds", [
    (b'["0001-01-01T00:00:00+05:00"]', (datetime,)),  # before year 1 in UTC
    (b'["9999-12-31T23:59:59-05:00"]', (datetime,)),  # after year 9999 in UTC
    (b'["2026-01-01T00:00:00"]', (datetime,)),  # no offset
    (b'[1764612000]', (datetime,)),
    (b'["NaN"]', (Score,)), (b'["inf"]', (Score,)), (b'["-Infinity"]', (Score,)), (b'["1e999"]', (Score,)),
    (b'["(5"]', (Score,)), (b'[" 5"]', (Score,)), (b'["1_0"]', (Score,)), (b'[5]', (Score,)),
    (b'[NaN]', (float,)), (b'[1e999]', (float,)), (b'[true]', (int,)), (b'[1.5]', (int,)),
    (b'[9223372036854775808]', (int,)), (b'[-9223372036854775809]', (int,)), (b'["1"]', (int,)),
    (b'[123]', (UUID,)), (b'["not-a-uuid"]', (UUID,)), (b'[null]', (str,)), (b'[["x"]]', (str,)),
    (b'{"a": 1}', (str,)), (b'[]', (str,)), (b'["a", "b"]', (str,)), (b'not json', (str,)),
])
def test_values_out_of_range_or_of_the_wrong_kind_are_rejected_even_when_signed(payload, kinds):
    rejected(signed(payload), *kinds)


def test_int64_bounds_are_accepted():
    assert CURSORS.decode(CURSORS.encode(INT64_MAX, -INT64_MAX - 1), int, int) == (INT64_MAX, -INT64_MAX - 1)


def test_the_key_is_shared_by_every_instance_of_a_deployment():
    """Instances share PULSE_AUDIT_KEY (compose requires it): the default cursor key is
    derived from it, so a cursor from one instance pages on another; PULSE_CURSOR_KEY
    overrides it."""
    one, two = (Cursors.from_settings(Settings(audit_key="shared secret", instance_id=i)) for i in ("a", "b"))
    assert two.decode(one.encode(7), int) == (7,)
    other = Cursors.from_settings(Settings(audit_key="another secret"))
    with pytest.raises(ValidationFailed):
        other.decode(one.encode(7), int)
    explicit = Settings(audit_key="shared secret", cursor_key="a cursor key of its own")
    assert Cursors.from_settings(explicit).decode(Cursors(b"a cursor key of its own").encode(7), int) == (7,)
    with pytest.raises(ValidationFailed):
        Cursors.from_settings(explicit).decode(one.encode(7), int)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=8,
)
KINDS = st.sampled_from([datetime, UUID, int, float, Score, str])


@hsettings(max_examples=300, deadline=None)
@given(payload=st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64)),
       kinds=st.lists(KINDS, min_size=1, max_size=3))
def test_any_signed_payload_decodes_to_its_kinds_or_is_a_validation_error(payload, kinds):
    try:
        values = CURSORS.decode(signed(payload), *kinds)
    except ValidationFailed as exc:
        assert [e.field for e in exc.errors] == ["cursor"]
        return
    for kind, value in zip(kinds, values, strict=True):
        assert isinstance(value, kind)
        if kind is datetime:
            assert value.utcoffset().total_seconds() == 0
        if kind is float:
            assert math.isfinite(value)
        if kind is Score:
            assert math.isfinite(float(value))


@hsettings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80))
def test_any_text_that_is_not_an_issued_cursor_is_a_validation_error(text):
    with pytest.raises(ValidationFailed):
        CURSORS.decode(text, datetime, UUID)
