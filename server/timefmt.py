"""Timestamps as the contract writes them: ISO 8601 in UTC with a ``Z``."""
from __future__ import annotations

from datetime import datetime, timezone


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    # isoformat, not strftime: strftime("%Y") drops the zero padding of years before 1000.
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
