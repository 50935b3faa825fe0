"""Timestamps as the contract writes them: UTC, microseconds, a ``Z``."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kernel.timefmt import iso, parse_iso


def test_utc_moment():
    assert iso(datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.123456Z"


def test_whole_seconds_keep_their_microseconds_field():
    assert iso(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.000000Z"


def test_other_offsets_are_converted_to_utc():
    plus_three = timezone(timedelta(hours=3))
    assert iso(datetime(2026, 1, 2, 1, 0, 0, 7, tzinfo=plus_three)) == "2026-01-01T22:00:00.000007Z"


def test_naive_moments_are_taken_as_utc():
    assert iso(datetime(2026, 1, 2, 3, 4, 5, 6)) == "2026-01-02T03:04:05.000006Z"


def test_none_stays_none():
    assert iso(None) is None


def test_parse_iso_reads_back_what_iso_writes_in_utc():
    moment = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    assert parse_iso(iso(moment)) == moment and parse_iso(iso(moment)).tzinfo is not None
    assert parse_iso("2026-01-02T06:04:05.123456+03:00") == moment
    assert parse_iso("2026-01-02T03:04:05.123456") == moment  # naive: UTC
